"""`bnlint - --stdin-filename PATH`: an editor's unsaved buffer, checked as the file it is, and
the editor set-up the README gives, run as the editor runs it."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import FIXTURES, ROOT, run_bnlint

BLOCKS = '''\
import torch.nn as nn


def conv_bn(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, bias=False), nn.BatchNorm2d(cout))
'''

SAVED = '''\
import torch.nn as nn

from .blocks import conv_bn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = conv_bn(3, 8)

    def forward(self, x):
        return self.body(x)
'''

# the buffer as edited, not yet saved: a biased conv feeding BatchNorm, two lines lower
EDITED = SAVED.replace("        self.body = conv_bn(3, 8)\n", "        self.body = conv_bn(3, 8)\n"
                       "        self.proj = nn.Conv2d(8, 8, 1)\n"
                       "        self.bn = nn.BatchNorm2d(8)\n"
                       ).replace("return self.body(x)", "return self.bn(self.proj(self.body(x)))")
EDITED_LINE = EDITED.splitlines().index("        self.proj = nn.Conv2d(8, 8, 1)") + 1


@pytest.fixture
def project(tmp_path):
    # a package name no other test uses: in one process, Python keeps the first package of a
    # name it imported
    (tmp_path / "netpkg").mkdir()
    (tmp_path / "netpkg" / "__init__.py").write_text("")
    (tmp_path / "netpkg" / "blocks.py").write_text(BLOCKS)
    (tmp_path / "netpkg" / "net.py").write_text(SAVED)
    return tmp_path


def test_the_text_on_stdin_is_checked_as_the_file_it_names(project):
    assert run_bnlint("netpkg/net.py", "--format", "json", cwd=project).exit_code == 0
    result = run_bnlint("-", "--stdin-filename", "netpkg/net.py", "--format", "json",
                        cwd=project, input=EDITED)
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    [finding] = data["findings"]
    # imported under its own name, inside its package: its relative import works
    assert (finding["code"], finding["path"], finding["line"]) == ("BN001", "netpkg/net.py",
                                                                    EDITED_LINE)
    assert finding["model"] == "netpkg/net.py:Net()"
    assert [m["spec"] for m in data["models"]] == ["netpkg/net.py:Net()"]
    # the file on disk is the saved one, and nothing was left behind
    assert (project / "netpkg" / "net.py").read_text() == SAVED
    assert sorted(p.name for p in (project / "netpkg").iterdir()) == [
        "__init__.py", "blocks.py", "net.py"]


def test_the_text_form_shows_the_buffers_line_not_the_saved_one(project):
    result = run_bnlint("-", "--stdin-filename", "netpkg/net.py", cwd=project, input=EDITED)
    assert f"{EDITED_LINE} |         self.proj = nn.Conv2d(8, 8, 1)" in result.stdout


def test_script_rules_suppressions_and_per_file_ignores_apply_to_it(project):
    script = (FIXTURES / "scripts" / "predict_train_mode.py").read_text()
    result = run_bnlint("-", "--stdin-filename", "tools/predict.py", "--format", "json",
                        cwd=project, input=script)
    found = json.loads(result.stdout)["findings"]
    assert {(f["code"], f["path"]) for f in found} == {("BN003", "tools/predict.py")}
    lines = script.splitlines()
    lines[found[0]["line"] - 1] += "  # bnlint: ignore[BN003]"
    result = run_bnlint("-", "--stdin-filename", "tools/predict.py", "--format", "json",
                        cwd=project, input="\n".join(lines) + "\n")
    assert len(json.loads(result.stdout)["findings"]) == len(found) - 1
    (project / "pyproject.toml").write_text('[tool.bnlint]\nper-file-ignores = '
                                            '{ "tools/*" = ["BN003"] }\n')
    result = run_bnlint("-", "--stdin-filename", "tools/predict.py", cwd=project, input=script)
    assert result.exit_code == 0, result.output


def test_force_exclude_applies_to_the_name_given(project):
    (project / "pyproject.toml").write_text('[tool.bnlint]\nexclude = ["netpkg"]\n')
    result = run_bnlint("-", "--stdin-filename", "netpkg/net.py", "--force-exclude",
                        cwd=project, input=EDITED)
    assert result.exit_code == 0 and result.stdout == ""


@pytest.mark.parametrize("args, message", [
    (["-"], "--stdin-filename PATH"),
    (["-", "netpkg/net.py", "--stdin-filename", "x.py"], "must be the only PATH"),
    (["netpkg/net.py", "--stdin-filename", "x.py"], "give - as the only PATH"),
    (["-", "--stdin-filename", "x.py", "--fix"], "only checked"),
])
def test_usage_errors(project, args, message):
    result = run_bnlint(*args, cwd=project, input=EDITED)
    assert result.exit_code == 2 and message in result.output


# --- the README's editor set-up --------------------------------------------------------------

def efm_tool() -> dict:
    section = re.search(r"^## Editors\n(.*?)(?=^## )", (ROOT / "README.md").read_text(),
                        re.S | re.M)[1]
    (config,) = re.findall(r"```yaml\n(.*?)```", section, re.S)
    data = yaml.safe_load(config)
    (tool,) = data["languages"]["python"]
    return tool


def errorformat(formats: list[str]) -> list[re.Pattern]:
    """The patterns of the errorformat strings (%f, %l, %c, %m) the README's config uses."""
    pieces = {"%f": r"(?P<f>[^:]+)", "%l": r"(?P<l>\d+)", "%c": r"(?P<c>\d+)", "%m": r"(?P<m>.*)"}
    patterns = []
    for fmt in formats:
        assert set(re.findall(r"%.", fmt)) <= set(pieces), fmt
        regex = "".join(pieces.get(part, re.escape(part)) for part in re.split(r"(%.)", fmt))
        patterns.append(re.compile(regex + r"\Z"))
    return patterns


def test_the_editor_configuration_runs_and_its_diagnostics_land_on_the_buffer(project):
    tool = efm_tool()
    assert tool["lint-stdin"] is True and tool["lint-ignore-exit-code"] is True
    buffer = project / "netpkg" / "net.py"
    # as efm-langserver does: ${INPUT} is the buffer's absolute path, the command runs through
    # the shell in the project's root, with the buffer's text on stdin and output combined
    command = tool["lint-command"].replace("${INPUT}", str(buffer))
    environment = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent),
                                                          os.environ["PATH"]])}
    result = subprocess.run(["sh", "-c", command], cwd=project, input=EDITED, text=True,
                            capture_output=True, env=environment)
    assert result.returncode == 1, result.stderr
    diagnostics = []
    for line in (result.stdout + result.stderr).splitlines():
        for pattern in errorformat(tool["lint-formats"]):
            match = pattern.match(line)
            if match:
                path = Path(match["f"])
                diagnostics.append((project / path if not path.is_absolute() else path,
                                    int(match["l"]), int(match["c"]), match["m"]))
                break
    assert len(diagnostics) == 1, result.stdout
    [(path, line, col, message)] = diagnostics
    assert path == buffer and line == EDITED_LINE and message.startswith("BN001 ")
    assert col == EDITED.splitlines()[line - 1].index("nn.Conv2d") + 1
