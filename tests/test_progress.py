"""The one progress helper (``labelwise.progress``): rich on stderr, a no-op when disabled, rich only when shown."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from labelwise.progress import ProgressBar, track


def test_bar_writes_to_stderr_with_extra_fields() -> None:
    with CliRunner().isolation() as (stdout, stderr, _output):
        with ProgressBar("train", 4, fields={"loss": "loss {task.fields[loss]:.3f}"}) as bar:
            bar.update(completed=1)
            bar.update(2, "epoch 0", loss=0.5)
            bar.advance()
        assert list(track(["a", "b"], "cases")) == ["a", "b"]
        sys.stderr.flush()
        sys.stdout.flush()
        err, out = stderr.getvalue().decode(), stdout.getvalue().decode()
    assert out == ""
    assert "epoch 0" in err and "3/4" in err and "loss 0.500" in err
    assert "cases" in err and "2/2" in err


def test_disabled_bar_does_nothing_and_imports_no_rich() -> None:
    code = (
        "import sys\n"
        "from labelwise.progress import ProgressBar, track\n"
        "with ProgressBar('x', 3, enabled=False) as bar:\n"
        "    bar.update(2, 'y', loss=1.0); bar.advance(); bar.print('z')\n"
        "assert list(track(range(3), 'x', enabled=False)) == [0, 1, 2]\n"
        "print('rich' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False" and proc.stderr == ""
