"""The README's Fixing section: its console sessions run as shown, in a copy of the project's
fixtures (the bundled fixtures themselves are never edited)."""

import re
import shutil
import subprocess

from conftest import FIXTURES, ROOT

SECTION = re.search(r"^## Fixing\n(.*?)^## ", (ROOT / "README.md").read_text(encoding="utf-8"),
                    re.S | re.M)[1]
SESSIONS = re.findall(r"```console\n(.*?)```", SECTION, re.S)


def steps(session: str) -> list[tuple[str, list[str]]]:
    """(command, the output lines shown under it) for each ``$ `` line of a session."""
    found: list[tuple[str, list[str]]] = []
    for line in session.splitlines():
        if line.startswith("$ "):
            found.append((line[2:], []))
        else:
            found[-1][1].append(line)
    return found


def test_fixing_sessions_run_as_shown(tmp_path):
    shutil.copytree(FIXTURES, tmp_path / "fixtures")
    pristine = {p.name: p.read_bytes() for p in FIXTURES.glob("*.py")}
    assert len(SESSIONS) == 3
    for session in SESSIONS:
        for command, shown in steps(session):
            result = subprocess.run(command, shell=True, cwd=tmp_path, capture_output=True,
                                    text=True, timeout=300)
            assert result.returncode in (0, 1), result.stderr
            output = (result.stdout + result.stderr).splitlines()
            assert [line for line in output if line in shown] == shown, command
    assert {p.name: p.read_bytes() for p in FIXTURES.glob("*.py")} == pristine
