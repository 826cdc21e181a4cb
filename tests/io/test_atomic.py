"""Atomic files and staged folders: permissions follow the umask, --overwrite swaps only a complete output."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from labelwise.errors import DataError
from labelwise.io import STALE_MARKER, StagedDir, write_text_atomic


@pytest.fixture
def umask() -> Iterator[int]:
    old = os.umask(0o027)
    yield 0o027
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_files_honour_the_umask_and_keep_a_replaced_files_mode(tmp_path: Path, umask: int) -> None:
    target = write_text_atomic(tmp_path / "a.txt", "one")
    assert _mode(target) == 0o666 & ~umask == 0o640
    os.chmod(target, 0o600)
    write_text_atomic(target, "two")
    assert _mode(target) == 0o600 and target.read_text() == "two"


def test_staged_dir_creates_replaces_and_refuses(tmp_path: Path, umask: int) -> None:
    dest = tmp_path / "out"
    with StagedDir(dest, marker="done.txt", kind="result") as stage:
        (stage.path / "done.txt").write_text("v1")
        assert not dest.exists()  # nothing visible until complete
    assert (dest / "done.txt").read_text() == "v1" and _mode(dest) == 0o777 & ~umask
    with pytest.raises(DataError, match="a result already exists here"):
        StagedDir(dest, marker="done.txt", kind="result")
    with pytest.raises(RuntimeError), StagedDir(dest, overwrite=True, marker="done.txt") as stage:
        (stage.path / "done.txt").write_text("v2")
        raise RuntimeError("failed half-way")
    assert (dest / "done.txt").read_text() == "v1"  # the old output survives a failed overwrite
    with StagedDir(dest, overwrite=True, marker="done.txt") as stage:
        (stage.path / "done.txt").write_text("v3")
    assert sorted(p.name for p in dest.iterdir()) == ["done.txt"] and (dest / "done.txt").read_text() == "v3"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no hidden leftovers


def test_staged_dir_never_replaces_other_files(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(DataError, match="is not a labelwise dataset"):
        StagedDir(mine, overwrite=True, marker="dataset.json", kind="dataset")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        StagedDir(tmp_path / "file", overwrite=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    with StagedDir(empty, marker="dataset.json") as stage:
        (stage.path / "dataset.json").write_text("{}")
    assert (empty / "dataset.json").is_file()


def test_stale_marker_stays_when_the_new_run_fails(tmp_path: Path) -> None:
    dest = tmp_path / "eval"
    dest.mkdir()
    (dest / "summary.json").write_text("old")
    with pytest.raises(KeyboardInterrupt), StagedDir(dest, overwrite=True, marker="summary.json", mark_stale=True):
        assert (dest / STALE_MARKER).is_file()
        raise KeyboardInterrupt
    assert (dest / STALE_MARKER).is_file() and (dest / "summary.json").read_text() == "old"
    with StagedDir(dest, overwrite=True, marker="summary.json", mark_stale=True) as stage:
        (stage.path / "summary.json").write_text("new")
    assert not (dest / STALE_MARKER).exists() and (dest / "summary.json").read_text() == "new"


def test_leftovers_of_dead_processes_are_removed(tmp_path: Path) -> None:
    dead = tmp_path / ".out.partial-999999999-abc"
    dead.mkdir()
    alive = tmp_path / f".out.partial-{os.getpid()}-abc"
    alive.mkdir()
    StagedDir(tmp_path / "out").abort()
    assert not dead.exists() and alive.exists()
