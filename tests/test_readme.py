"""The README is the front door: its Python examples run, its commands are the real ones."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


def runnable(block: str) -> bool:
    """Snippets of a larger file (indented or starting with `self.`) are shown, not run."""
    return not block.startswith((" ", "self."))


@pytest.mark.parametrize("block", [b for b in PYTHON_BLOCKS if runnable(b)],
                         ids=lambda b: b.splitlines()[0][:40])
def test_python_examples_run(block, tmp_path):
    script = tmp_path / "example.py"
    script.write_text(block, encoding="utf-8")
    result = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    for line in block.splitlines():
        if line.startswith("# prints: "):
            assert line.removeprefix("# prints: ") in result.stdout


def test_ci_runs_the_readme_test_command():
    command = re.search(r"```console\n(pip install -e '\.\[dev\]'.*)\n```", README)[1]
    assert command in (ROOT / ".ci" / "run").read_text()


def test_quick_start_runs_on_a_bundled_fixture():
    command = re.search(r"```console\npip install -e '\.\[torch\]' && (bnlint .*)\n```", README)[1]
    fixture = command.split()[1]
    assert Path(ROOT / fixture).is_file()
    result = subprocess.run([sys.executable, "-m", "bnlint", *command.split()[1:]], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 1 and "BN001" in result.stdout
