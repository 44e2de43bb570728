"""The command line as users meet it: exit codes, help, rule docs, configuration."""

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from bnlint.cli import main
from bnlint.rules import RULES
from conftest import FIXTURES


def run(*args, cwd=None):
    """Invoke the CLI, from ``cwd`` when given (where it looks for pyproject.toml)."""
    before = os.getcwd()
    os.chdir(cwd or before)
    try:
        return CliRunner().invoke(main, list(args))
    finally:
        os.chdir(before)


def test_exit_codes_clean_findings_and_errors(tmp_path):
    assert run(str(FIXTURES / "clean.py")).exit_code == 0
    assert run(str(FIXTURES / "vgg.py")).exit_code == 1
    broken = tmp_path / "broken.py"
    broken.write_text("import torch\nimport no_such_module_xyz\n")
    result = run(str(broken))
    assert result.exit_code == 2
    assert "import failed: ModuleNotFoundError" in result.output
    assert "Traceback" not in result.output
    assert "Traceback" in run(str(broken), "--verbose").output


def test_no_paths_is_a_usage_error():
    result = run()
    assert result.exit_code == 2 and "bnlint ." in result.output


def test_missing_path_is_an_error_not_a_traceback():
    result = run("no/such/file.py")
    assert result.exit_code == 2 and "no such file or folder" in result.output


def test_unknown_rule_code_is_a_usage_error():
    result = run("--select", "BN999", str(FIXTURES / "clean.py"))
    assert result.exit_code == 2
    assert "unknown rule code 'BN999'" in result.output


def test_select_and_ignore_options():
    data = json.loads(run("--select", "BN002", "--format", "json",
                          str(FIXTURES / "act_before_bn.py"), str(FIXTURES / "vgg.py")).output)
    assert set(data["summary"]["by_code"]) == {"BN002"}
    result = run("--ignore", "BN001,BN002", str(FIXTURES / "vgg.py"))
    assert result.exit_code == 0


@pytest.mark.parametrize("code", sorted(RULES))
def test_explain_every_rule(code):
    result = run("--explain", code.lower())
    assert result.exit_code == 0
    assert RULES[code].explanation.rstrip() in result.output  # its sections: test_rule_pages.py


def test_explain_unknown_rule():
    result = run("--explain", "XX1")
    assert result.exit_code == 2 and "--list-rules" in result.output


def test_list_rules_shows_every_registered_rule():
    output = run("--list-rules").output
    for rule in RULES.values():
        assert rule.code in output and rule.summary in output


def test_list_rules_shows_the_fix_and_default_of_the_newer_rules():
    lines = {line.split()[0]: line.split() for line in run("--list-rules").output.splitlines()}
    assert lines["BN007"][1:4] == ["keras-style-momentum", "unsafe", "on"]
    assert lines["BN008"][1:4] == ["dropout-before-batchnorm", "unsafe", "on"]
    assert lines["BN009"][1:4] == ["frozen-batchnorm-in-train-mode", "-", "on"]
    assert lines["BN010"][1:4] == ["batchnorm-in-gradient-penalty-critic", "-", "on"]


def test_prefixes_select_by_digits_as_codes_reach_two_digits():
    """``BN00`` means BN001-BN009 and ``BN01`` BN010 onwards, on the command line and in
    pyproject.toml alike."""
    from bnlint import rules

    everything = set(rules.RULES)
    assert {"BN009", "BN010"} <= everything
    assert rules.resolve_codes(["BN"]) == rules.resolve_codes(["ALL"]) == everything
    assert rules.resolve_codes(["BN00"]) == everything - {"BN010", "BN900"}
    assert rules.resolve_codes(["bn01"]) == {"BN010"}
    assert rules.resolve_codes(["BN0"]) == everything - {"BN900"}
    assert rules.resolve_codes(["BN9"]) == {"BN900"}
    assert rules.enabled_codes(["BN"], ["BN00"]) == {"BN010", "BN900"}
    with pytest.raises(rules.UnknownRuleError):
        rules.resolve_codes(["BN1"])


def test_select_prefix_runs_the_new_rules(tmp_path):
    (tmp_path / "model.py").write_text(
        "from torch import nn\n\nmodel = nn.Sequential(nn.Linear(4, 8, bias=False), "
        "nn.Dropout(0.5), nn.BatchNorm1d(8, momentum=0.9))\n")
    for select in ("BN", "BN00", "BN007,BN008"):
        result = run("model.py", "--select", select, "--format", "json", cwd=tmp_path)
        codes = sorted(f["code"] for f in json.loads(result.stdout)["findings"])
        assert codes == ["BN007", "BN008"], (select, result.output)


def test_help_explains_specs_and_exit_codes():
    output = run("--help").output
    assert "file.py" in output or "vgg.py:VGG" in output
    assert "Exit status" in output and "[tool.bnlint]" in output


def test_pyproject_configuration(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.bnlint]\nignore = ["BN001"]\n')
    result = run(str(FIXTURES / "vgg.py"), cwd=tmp_path)
    assert result.exit_code == 0, result.output
    (tmp_path / "pyproject.toml").write_text('[tool.bnlint]\nselect = ["BN002"]\n')
    assert run(str(FIXTURES / "vgg.py"), cwd=tmp_path).exit_code == 0
    assert run(str(FIXTURES / "act_before_bn.py"), cwd=tmp_path).exit_code == 1


def test_command_line_select_overrides_pyproject(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.bnlint]\nselect = ["BN002"]\n')
    assert run("--select", "BN001", str(FIXTURES / "vgg.py"), cwd=tmp_path).exit_code == 1


def test_bad_configuration_is_reported_in_one_line(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.bnlint]\nselekt = ["BN002"]\n')
    result = run(str(FIXTURES / "clean.py"), cwd=tmp_path)
    assert result.exit_code == 2
    assert "unknown key(s) in [tool.bnlint]: selekt" in result.output


def test_model_free_files_do_not_import_torch(tmp_path):
    (tmp_path / "utils.py").write_text("def add(a, b):\n    return a + b\n")
    (tmp_path / "README.md").write_text("# docs\n")
    code = (
        "import sys\n"
        "from bnlint.cli import main\n"
        f"try:\n    main([{str(tmp_path)!r}])\n"
        "except SystemExit as exit:\n"
        "    assert exit.code == 0, exit.code\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_python_dash_m_runs_the_cli():
    result = subprocess.run([sys.executable, "-m", "bnlint", "--version"], capture_output=True,
                            text=True, check=True)
    assert result.stdout.startswith("bnlint, version ")


def test_prints_of_the_users_code_do_not_corrupt_json(tmp_path):
    path = tmp_path / "noisy.py"
    path.write_text("import torch.nn as nn\n\nclass Net(nn.Module):\n"
                    "    def __init__(self):\n        super().__init__()\n        print('building')\n"
                    "        self.conv = nn.Conv2d(3, 8, 3)\n        self.bn = nn.BatchNorm2d(8)\n\n"
                    "    def forward(self, x):\n        print('tracing')\n"
                    "        return self.bn(self.conv(x))\n")
    result = subprocess.run([sys.executable, "-m", "bnlint", "--format", "json", str(path)],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert json.loads(result.stdout)["summary"]["by_code"] == {"BN001": 1}
    assert "building" in result.stderr and "tracing" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--diff", "--fix"], "choose one"),
    (["--diff", "--format", "json"], "does not go with --format"),
])
def test_contradictory_fix_options_are_usage_errors(args, message):
    result = run(*args, str(FIXTURES / "vgg.py"))
    assert result.exit_code == 2 and message in result.output


def test_interrupt_exits_130_not_the_findings_status(tmp_path):
    path = tmp_path / "slow.py"
    path.write_text("import torch.nn as nn\n\nclass Net(nn.Module):\n    def __init__(self):\n"
                    "        super().__init__()\n        raise KeyboardInterrupt\n")
    result = run(str(path))
    assert result.exit_code == 130 and "interrupted" in result.output
