"""The loader: three spec forms, finding models in a file, and refusing to run scripts."""

import sys

from bnlint.lint import lint_specs
from bnlint.load import load
from conftest import FIXTURES

NET = """
import torch.nn as nn

class Net(nn.Module):
    def __init__(self, width=8):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3)
        self.bn = nn.BatchNorm2d(width)

    def forward(self, x):
        return self.bn(self.conv(x))
"""


def specs(loaded):
    return [c.spec for c in loaded.candidates]


def test_plain_file_finds_classes_instances_and_factories(tmp_path):
    path = tmp_path / "models.py"
    path.write_text(NET + """
class Block(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3)

def wide_net():
    return Net(width=16)

def _private():
    return Net()

def helper(x):
    return Net(x)

net = Net(4)
""")
    loaded = load([str(path)])
    label = str(path)
    assert specs(loaded) == [f"{label}:net", f"{label}:wide_net()"]
    # Net itself is built by `net` and `wide_net()` already; Block needs arguments
    [skipped] = loaded.needs_arguments.values()
    assert skipped.spec == f"{label}:Block" and "channels" in skipped.reason
    assert f"'{label}:Block(...)'" in skipped.reason


def test_file_expression_spec(tmp_path):
    path = tmp_path / "models.py"
    path.write_text(NET)
    report = lint_specs([f"{path}:Net(width=5)"])
    [finding] = report.findings
    assert finding.model == f"{path}:Net(width=5)"
    assert finding.code == "BN001" and finding.line == 7


def test_module_expression_spec(tmp_path, monkeypatch):
    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    report = lint_specs(["mypkg.nets:Net()"])
    [finding] = report.findings
    assert finding.path.endswith("nets.py") and finding.line == 7


def test_file_inside_a_package_can_use_relative_imports(tmp_path):
    package = tmp_path / "zoo"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "layers.py").write_text(NET)
    (package / "model.py").write_text(
        "import torch.nn as nn\nfrom .layers import Net\n\n"
        "class Wrapper(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.inner = Net()\n\n    def forward(self, x):\n        return self.inner(x)\n")
    report = lint_specs([str(package / "model.py")])
    assert [f.code for f in report.findings] == ["BN001"]
    assert report.findings[0].module == "inner.conv"


def test_folder_skips_virtualenvs_and_hidden_folders(tmp_path):
    (tmp_path / "a.py").write_text(NET)
    for folder in (".hidden", "venv", "build"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "b.py").write_text(NET)
    loaded = load([str(tmp_path)])
    assert [f.name for f in loaded.files] == ["a.py"]


def test_exclude_patterns(tmp_path):
    (tmp_path / "a.py").write_text(NET)
    (tmp_path / "legacy").mkdir()
    (tmp_path / "legacy" / "b.py").write_text(NET)
    loaded = load([str(tmp_path)], exclude=["legacy"])
    assert [f.name for f in loaded.files] == ["a.py"]


def test_script_that_works_on_import_is_not_imported(tmp_path):
    marker = tmp_path / "trained.txt"
    script = tmp_path / "train.py"
    script.write_text(NET + f"""
model = Net()
for epoch in range(3):
    open({str(marker)!r}, "w").write("training ran")
""")
    report = lint_specs([str(script)])
    assert not marker.exists()
    [result] = report.models
    assert result.status == "skipped"
    assert "line 14" in result.reason and "for epoch in range(3)" in result.reason
    assert "__main__" in result.reason


def test_main_guard_and_setup_calls_are_allowed(tmp_path):
    path = tmp_path / "ok.py"
    path.write_text("import torch\ntorch.manual_seed(0)\n" + NET + """
try:
    import apex
except ImportError:
    apex = None

if __name__ == "__main__":
    raise SystemExit("must not run when linted")
""")
    report = lint_specs([str(path)])
    assert [m.status for m in report.models] == ["ok"]
    assert [f.code for f in report.findings] == ["BN001"]


def test_explicit_spec_imports_even_a_script(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(NET + "\nprint('side effect')\n")
    report = lint_specs([f"{script}:Net()"])
    assert [f.code for f in report.findings] == ["BN001"]


def test_files_without_torch_are_not_imported(tmp_path):
    path = tmp_path / "util.py"
    path.write_text("raise RuntimeError('imported!')\n")
    report = lint_specs([str(path)])
    assert report.models == [] and report.findings == []


def test_syntax_error_import_error_and_failing_constructor(tmp_path):
    (tmp_path / "bad_syntax.py").write_text("import torch\ndef broken(:\n")
    (tmp_path / "bad_import.py").write_text("import torch\nimport no_such_module_xyz\n")
    (tmp_path / "bad_init.py").write_text(
        "import torch.nn as nn\n\nclass Net(nn.Module):\n    def __init__(self):\n"
        "        super().__init__()\n        raise ValueError('needs a config file')\n")
    report = lint_specs([str(tmp_path)])
    errors = {m.spec.split("/")[-1]: m.reason for m in report.models if m.status == "error"}
    assert errors["bad_syntax.py"].startswith("syntax error at line 2")
    assert "ModuleNotFoundError" in errors["bad_import.py"]
    assert "no_such_module_xyz" in errors["bad_import.py"]
    assert errors["bad_init.py:Net()"] == (
        "building the model failed: ValueError: needs a config file")
    assert report.has_errors
    detail = next(m.detail for m in report.models if m.spec.endswith("bad_init.py:Net()"))
    assert "Traceback" in detail


def test_expression_errors(tmp_path):
    path = tmp_path / "m.py"
    path.write_text(NET)
    report = lint_specs([f"{path}:Net(", f"{path}:42", f"{tmp_path}/missing.py:Net()",
                         "no_such_pkg_xyz:Net()"])
    reasons = {m.spec.rpartition("/")[2]: m.reason for m in report.models}
    assert reasons["m.py:Net("].startswith("invalid expression 'Net('")
    assert reasons["m.py:42"] == "evaluates to int, not a torch.nn.Module"
    assert reasons["missing.py:Net()"].startswith("no such file")
    assert "No module named 'no_such_pkg_xyz'" in reasons["no_such_pkg_xyz:Net()"]


def test_loading_leaves_sys_path_as_it_was(tmp_path):
    (tmp_path / "m.py").write_text(NET)
    before = list(sys.path)
    lint_specs([str(tmp_path / "m.py")])
    assert sys.path == before


def test_bundled_fixtures_load_without_errors():
    report = lint_specs([str(FIXTURES)])
    assert not report.has_errors, [m for m in report.models if m.status == "error"]


def test_named_file_without_py_suffix_is_loaded(tmp_path):
    path = tmp_path / "train_model"
    path.write_text(NET)
    report = lint_specs([str(path)])
    assert [f.code for f in report.findings] == ["BN001"]


def test_file_whose_classes_all_need_arguments_is_skipped_not_a_crash(tmp_path):
    path = tmp_path / "blocks.py"
    path.write_text("import torch.nn as nn\n\nclass Block(nn.Module):\n"
                    "    def __init__(self, channels):\n        super().__init__()\n")
    report = lint_specs([str(path)])
    [result] = report.models
    assert result.status == "skipped" and "channels" in result.reason


def test_files_with_a_bom_or_a_coding_line_load_as_python_reads_them(tmp_path):
    bom = tmp_path / "bom.py"
    bom.write_bytes(b"\xef\xbb\xbf" + NET.encode())
    latin = tmp_path / "latin.py"
    latin.write_bytes(b"# -*- coding: latin-1 -*-\n# caf\xe9\n" + NET.encode())
    report = lint_specs([str(bom), str(latin)])
    assert not report.has_errors, [m.reason for m in report.models]
    assert {(f.path.rpartition("/")[2], f.line) for f in report.findings} == {
        ("bom.py", 7), ("latin.py", 9)}


def test_model_built_by_the_expression_itself_is_not_placed_in_the_callers_code():
    report = lint_specs(["torch.nn:Sequential(Conv2d(3, 4, 3), BatchNorm2d(4))"])
    [finding] = report.findings
    assert finding.code == "BN001" and finding.path is None
    assert "also built" not in finding.message


def test_files_can_import_packages_from_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "blocks.py").write_text(NET)
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "model.py").write_text(
        "import torch\nfrom pkg.blocks import Net\n\nmodel = Net()\n")
    monkeypatch.chdir(tmp_path)
    report = lint_specs(["scripts/model.py"])
    assert not report.has_errors, [m.reason for m in report.models]
    assert [f.code for f in report.findings] == ["BN001"]


def test_a_module_imported_before_the_run_is_never_dropped(tmp_path, monkeypatch):
    """Only what the user's files imported is dropped when another folder gives its name
    to another module: a module the caller imported before (here a ``helper`` from folder a,
    shadowed by b's) stays, as torch does beside a folder that holds a ``torch/``."""
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "helper.py").write_text(f"WHERE = {folder!r}\n")
        (tmp_path / folder / "model.py").write_text(
            "import torch.nn as nn\n\n\nclass Net(nn.Module):\n    def __init__(self):\n"
            "        super().__init__()\n        self.fc = nn.Linear(2, 2)\n\n"
            "    def forward(self, x):\n        return self.fc(x)\n")
    monkeypatch.syspath_prepend(str(tmp_path / "a"))
    monkeypatch.delitem(sys.modules, "helper", raising=False)
    import helper

    report = lint_specs([str(tmp_path / "a" / "model.py"), str(tmp_path / "b" / "model.py")])
    assert [m.status for m in report.models] == ["ok", "ok"]
    assert sys.modules["helper"] is helper and helper.WHERE == "a"
