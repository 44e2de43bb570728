"""What a CI job or a team adopting bnlint sets: per-file-ignores, --config, --force-exclude,
--statistics, --output-file, --exit-zero, --quiet, --color, and the text formats."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from bnlint.cli import main
from conftest import FIXTURES, ROOT, line_of, run_bnlint

VGG_LINE = line_of(FIXTURES / "vgg.py", "nn.Conv2d(in_channels, x")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture
def project(tmp_path):
    for folder in ("models", "legacy/nested"):
        (tmp_path / folder).mkdir(parents=True)
    shutil.copy(FIXTURES / "vgg.py", tmp_path / "models" / "vgg.py")
    shutil.copy(FIXTURES / "act_before_bn.py", tmp_path / "legacy" / "small.py")
    shutil.copy(FIXTURES / "vgg.py", tmp_path / "legacy" / "nested" / "old_vgg.py")
    return tmp_path


def findings(folder, *args):
    result = run_bnlint(*args, "--format", "json", cwd=folder)
    return sorted({(f["code"], f["path"]) for f in json.loads(result.stdout)["findings"]})


def configure(folder, text):
    (folder / "pyproject.toml").write_text(f"[tool.bnlint]\n{text}\n", encoding="utf-8")


# --- per-file-ignores ----------------------------------------------------------------------

def test_per_file_ignores_silence_rules_in_the_files_a_glob_matches(project):
    everything = findings(project, ".")
    assert everything == [("BN001", "legacy/nested/old_vgg.py"), ("BN001", "models/vgg.py"),
                          ("BN002", "legacy/small.py"), ("BN008", "legacy/small.py")]
    # as in ruff, `*` crosses folders; the glob is relative to the project root
    configure(project, 'per-file-ignores = { "legacy/*" = ["BN001", "BN002", "BN008"] }')
    assert findings(project, ".") == [("BN001", "models/vgg.py")]
    assert findings(project / "legacy", ".") == []  # run from below the root: same files
    configure(project, 'per-file-ignores = { "small.py" = ["BN0"] }')  # a file name, a prefix
    assert findings(project, ".") == everything[:2]
    configure(project, 'per-file-ignores = { "**/nested/*.py" = ["BN001"], '
                       '"models/{a,v}gg.py" = ["BN001"] }')
    assert findings(project, ".") == [("BN002", "legacy/small.py"), ("BN008", "legacy/small.py")]


def test_per_file_ignores_keep_the_fix_away_from_those_files(project):
    configure(project, 'per-file-ignores = { "legacy/*" = ["BN001"] }')
    before = (project / "legacy" / "nested" / "old_vgg.py").read_text()
    run_bnlint("models", "legacy", "--fix", cwd=project)
    assert (project / "legacy" / "nested" / "old_vgg.py").read_text() == before
    assert "bias=False" in (project / "models" / "vgg.py").read_text()


@pytest.mark.parametrize("text, message", [
    ('per-file-ignores = { "legacy/*" = ["BN999"] }', "per-file-ignores 'legacy/*': unknown rule"),
    ('per-file-ignores = ["legacy/*"]', "per-file-ignores must be a table"),
    ("baseline = 3", "baseline must be a file name"),
])
def test_bad_per_file_ignores_are_errors(project, text, message):
    configure(project, text)
    result = run_bnlint(".", cwd=project)
    assert result.exit_code == 2 and message in result.output


# --- --config and --force-exclude ----------------------------------------------------------

def test_config_file_replaces_the_nearest_pyproject(project, tmp_path_factory):
    configure(project, 'ignore = ["BN001", "BN002"]')
    elsewhere = tmp_path_factory.mktemp("ci") / "bnlint.toml"
    elsewhere.write_text('[tool.bnlint]\nselect = ["BN002"]\n')
    assert findings(project, ".", "--config", str(elsewhere)) == [("BN002", "legacy/small.py")]
    elsewhere.write_text('[tool.ruff]\nline-length = 100\n')
    result = run_bnlint(".", "--config", str(elsewhere), cwd=project)
    assert result.exit_code == 2 and "no [tool.bnlint] table" in result.output


def test_force_exclude_applies_exclude_to_paths_named_explicitly(project):
    configure(project, 'exclude = ["legacy"]')
    named = ["models/vgg.py", "legacy/small.py", "legacy/nested/old_vgg.py"]
    assert len(findings(project, *named)) == 4  # a file named is checked, excluded or not
    assert findings(project, *named, "--force-exclude") == [("BN001", "models/vgg.py")]
    result = run_bnlint("legacy/small.py", "--force-exclude", cwd=project)
    assert result.exit_code == 0 and result.stdout == ""
    assert "every path given is excluded (--force-exclude)" in result.stderr


# --- what is printed, and the exit status ----------------------------------------------------

def test_text_shows_the_line_of_each_finding_with_a_caret_and_concise_does_not():
    path = str(FIXTURES / "vgg.py")
    text = run_bnlint(path, cwd=FIXTURES.parent).stdout.splitlines()
    header = f"fixtures/vgg.py:{VGG_LINE}:21: BN001"
    start = text.index(next(line for line in text if line.startswith(header)))
    source = (FIXTURES / "vgg.py").read_text().splitlines()[VGG_LINE - 1]
    call = "nn.Conv2d(in_channels, x, kernel_size=3, padding=1)"
    gutter = " " * len(str(VGG_LINE))
    assert text[start + 2:start + 6] == [
        f"{gutter} |", f"{VGG_LINE} | {source}",
        f"{gutter} | {' ' * source.index(call)}{'^' * len(call)} BN001", f"{gutter} |"]
    concise = run_bnlint(path, "--format", "concise", cwd=FIXTURES.parent).stdout.splitlines()
    assert concise[0] == text[start] and concise[1] == text[start + 1]
    assert not any(line.endswith(" |") for line in concise)


def test_statistics_count_findings_per_rule(project):
    result = run_bnlint(".", "--statistics", cwd=project)
    lines = result.stdout.splitlines()
    assert result.exit_code == 1
    assert lines[:3] == ["4  BN002  activation-before-batchnorm", "2  BN001  bias-before-batchnorm",
                         "1  BN008  dropout-before-batchnorm"]
    assert lines[-2].startswith("Found 7 findings")
    data = json.loads(run_bnlint(".", "--statistics", "--format", "json", cwd=project).stdout)
    assert data == [{"code": "BN002", "name": "activation-before-batchnorm", "count": 4},
                    {"code": "BN001", "name": "bias-before-batchnorm", "count": 2},
                    {"code": "BN008", "name": "dropout-before-batchnorm", "count": 1}]
    result = run_bnlint(".", "--statistics", "--format", "sarif", cwd=project)
    assert result.exit_code == 2 and "--statistics" in result.output


def test_output_file_holds_the_report_and_the_status_stays(project):
    result = run_bnlint(".", "-o", "reports/bnlint.json", "--format", "json", cwd=project)
    assert result.exit_code == 1 and result.stdout == ""
    data = json.loads((project / "reports" / "bnlint.json").read_text())
    assert data["summary"]["findings"] == 7


def test_exit_zero_turns_findings_into_0_and_keeps_2_for_errors(project):
    assert run_bnlint(".", "--exit-zero", cwd=project).exit_code == 0
    (project / "broken.py").write_text("import torch\nimport not_installed_here\n")
    assert run_bnlint(".", "--exit-zero", cwd=project).exit_code == 2


def test_quiet_prints_findings_and_failures_only(project):
    (project / "broken.py").write_text("import torch\nimport not_installed_here\n")
    (project / "train.py").write_text("import torch\nmodel = torch.nn.Linear(2, 2)\nmodel.eval()\n")
    result = run_bnlint(".", "-q", "--format", "concise", cwd=project)
    assert result.exit_code == 2
    lines = result.stdout.splitlines()
    assert sorted({line.split(":")[0] for line in lines if not line.startswith(" ")}) == [
        "broken.py", "legacy/nested/old_vgg.py", "legacy/small.py", "models/vgg.py"]
    assert "broken.py: error import failed" in result.stdout
    assert "train.py: skipped" not in result.stdout and "Found 6" not in result.stdout
    nothing = run_bnlint(".", "-q", "--select", "BN001", "--ignore", "BN001", cwd=project)
    assert nothing.stdout == "" and "bnlint: warning: no rule ran" in nothing.stderr


def run_colored(*args, **env):
    """The command line in a process whose stdout rich takes for a terminal (FORCE_COLOR)."""
    environment = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    environment.update(env)
    return subprocess.run([sys.executable, "-m", "bnlint", *args], capture_output=True,
                          text=True, env=environment, cwd=FIXTURES.parent).stdout


def test_no_color_turns_off_every_style_and_color_always_overrides_it():
    path = "fixtures/vgg.py"
    assert ANSI.search(run_colored(path, FORCE_COLOR="1"))
    plain = run_colored(path, FORCE_COLOR="1", NO_COLOR="1")
    assert not ANSI.search(plain), "bold text is a style too"
    assert ANSI.sub("", run_colored(path, FORCE_COLOR="1")) == plain
    assert not ANSI.search(run_colored(path, "--color", "never", FORCE_COLOR="1"))
    assert ANSI.search(run_colored(path, "--color", "always", NO_COLOR="1"))


def test_help_explains_every_option():
    output = run_bnlint("--help", cwd=FIXTURES.parent).output
    for param in main.params:
        for option in param.opts:
            if option.startswith("-"):
                assert option in output
    for option in ("--generate-baseline", "--stdin-filename", "--force-exclude", "--exit-zero",
                   "NO_COLOR", "per-file-ignores"):
        assert option in output


def test_readme_statistics_example_is_what_a_run_prints():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    command, shown = re.search(r"```console\n\$ bnlint ([^\n]* --statistics[^\n]*)\n(.*?)```",
                               readme, re.S).groups()
    result = run_bnlint(*command.split(), cwd=ROOT)
    assert result.exit_code == 1 and result.output == shown
