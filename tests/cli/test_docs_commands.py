"""Every ``labelwise ...`` command line in the README's and docs' fenced code blocks parses against the real CLI.

Nothing is executed: each line is matched against the Typer/click command objects. The command must exist, every
``--flag`` must be a visible option of that command (deprecated spellings are hidden, so the docs cannot teach
them), and there may be no more positional words than the command's visible arguments take.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer

from labelwise.cli.main import app

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^[ \t]*```[^\n]*\n(.*?)^[ \t]*```", re.S | re.M)
# `labelwise` (or `-m labelwise.cli`) as the word that starts a shell command: at the start of a line or after
# `&&`, `;`, `|`, `do`, `then`, behind environment assignments and `time`.
START = re.compile(
    r"(?:^|&&|;|\||\bdo\b|\bthen\b)\s*(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*(?:(?:/usr/bin/)?time(?:\s+-v)?\s+)?"
    r"(?:labelwise|\S*torchrun\b.*?-m\s+labelwise\.cli)(?=\s|$)"
)
ASSIGN = re.compile(r'^\s*([A-Za-z_][A-Za-z0-9_]*)="([^"]*)"\s*$')


@dataclass(frozen=True)
class DocLine:
    """One documented command line: where it is and its words after ``labelwise``."""

    where: str
    text: str
    words: tuple[str, ...]


def _logical_lines(block: str) -> list[str]:
    """Lines of a code block with ``\\`` continuations joined."""
    out: list[str] = []
    pending = ""
    for line in block.splitlines():
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append(pending + line)
        pending = ""
    if pending:
        out.append(pending)
    return out


def _words(command: str, variables: dict[str, str]) -> tuple[str, ...]:
    """Shell words of one command (comment dropped, ``$VAR`` of the same block expanded, brackets removed)."""
    command = command.split(" #", 1)[0]
    command = re.split(r"&&|;\s|\|\s|\bdone\b", command)[0]
    for name, value in variables.items():
        command = command.replace(f"${name}", value)
    words = []
    for word in shlex.split(command, posix=True):
        word = word.strip("[]()")
        if word in ("", "|", "...") or re.fullmatch(r"\$\{\w+\[@\]\}", word):
            continue
        words.append(word)
    return tuple(words)


def documented_commands() -> list[DocLine]:
    """Every ``labelwise`` command line in a fenced code block of README.md and docs/*.md."""
    found: list[DocLine] = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for block in FENCE.finditer(text):
            variables: dict[str, str] = {}
            first_line = text[: block.start(1)].count("\n") + 1
            for line in _logical_lines(block.group(1)):
                assign = ASSIGN.match(line)
                if assign:
                    variables[assign.group(1)] = assign.group(2)
                for start in START.finditer(line):
                    rest = line[start.end() :]
                    where = f"{doc.relative_to(REPO)} (block at line {first_line})"
                    found.append(DocLine(where, line.strip(), _words(rest, variables)))
    return found


COMMANDS = documented_commands()


def _takes_value(param: Any) -> bool:
    return not getattr(param, "is_flag", False) and not getattr(param, "count", False)


def check(words: tuple[str, ...]) -> str | None:
    """Why ``labelwise WORDS...`` does not parse (None: it does)."""
    command: Any = typer.main.get_command(app)
    path = ["labelwise"]
    words = list(words)
    while words and words[0] in ("-v", "--verbose"):
        words.pop(0)
    while hasattr(command, "commands"):
        if not words:
            return f"no subcommand after {' '.join(path)}"
        name = words.pop(0)
        if name not in command.commands:
            return f"{' '.join(path)} has no command {name!r}"
        command = command.commands[name]
        path.append(name)
    if words and words[0] == "merge" and hasattr(command, "merge_command"):  # `labelwise evaluate merge ...`
        command = command.merge_command
        path.append(words.pop(0))
    options: dict[str, Any] = {}
    arguments = []
    for param in command.params:
        if getattr(param, "hidden", False):
            continue
        if param.param_type_name == "argument":
            arguments.append(param)
        else:
            for opt in (*param.opts, *param.secondary_opts):
                options[opt] = param
    positionals = 0
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if word.startswith("-") and word not in ("-",):
            for flag in word.split("=", 1)[0].split("/"):
                if flag not in options:
                    return f"{' '.join(path)} has no option {flag}"
            param = options[word.split("=", 1)[0].split("/")[0]]
            if "=" not in word and _takes_value(param):
                i += 1
            continue
        positionals += 1
    if any(a.nargs == -1 for a in arguments):
        return None
    if positionals > len(arguments):
        return f"{' '.join(path)} takes {len(arguments)} positional argument(s), got {positionals}: {words}"
    return None


def test_the_docs_have_command_lines() -> None:
    assert len(COMMANDS) > 100
    assert any(c.words[:2] == ("data", "import") for c in COMMANDS)
    assert any("-m labelwise.cli" in c.text for c in COMMANDS)


@pytest.mark.parametrize("line", COMMANDS, ids=[f"{c.where}: {c.text[:60]}" for c in COMMANDS])
def test_documented_command_parses(line: DocLine) -> None:
    problem = check(line.words)
    assert problem is None, f"{line.where}: {line.text}\n  {problem}"


@pytest.mark.parametrize(
    ("words", "problem"),
    [
        (("predict", "RUN", "--data", "D", "--out", "P"), "takes 0 positional argument(s)"),
        (("qa", "--model", "RUN", "--data", "D", "--raters", "--out", "Q"), "has no option --model"),
        (("fuse", "--data", "D", "--out", "O", "--tie", "lowest"), None),
        (("data", "import", "folder", "S", "--out", "D"), None),
        (("data", "impart", "folder"), "has no command 'impart'"),
        (("predict", "--run", "R", "--data", "D", "--out", "P", "--tta/--no-tta"), None),
    ],
)
def test_the_checker_itself(words: tuple[str, ...], problem: str | None) -> None:
    found = check(words)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found
