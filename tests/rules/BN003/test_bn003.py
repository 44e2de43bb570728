"""BN003: inference (no_grad, inference_mode, export, trace) on a model that may be in training
mode, found by reading the scripts that use the model."""

import ast
import subprocess
import sys

import pytest

from bnlint.edits import apply_edits
from bnlint.engine import script_hits
from bnlint.lint import lint_specs
from bnlint.rules import RULES
from conftest import FIXTURES, ROOT, line_of

SCRIPTS = FIXTURES / "scripts"
HEADER = "import torch\nfrom torch import nn\n"


def bn003(report):
    return [f for f in report.findings if f.code == "BN003"]


def script(lint_code, body: str):
    """Lint a script (torch imports prepended); its BN003 findings."""
    return bn003(lint_code(HEADER + body, name="job.py", select=["BN003"]))


@pytest.fixture
def lint_text(tmp_path):
    """Lint a script given as text, for BN003 and BN004."""
    def run(text):
        path = tmp_path / "fixed.py"
        path.write_text(text)
        return lint_specs([str(path)], select=["BN003", "BN004"])
    return run


def edits(path, text):
    """The edits of the BN003 fixes of a script's findings that no comment suppresses."""
    hits = script_hits([RULES["BN003"]], path, text, ast.parse(text))
    return [edit for _, hit in hits for edit in hit.edits]


def fixed(path, text=None):
    """The script's text after its BN003 fixes."""
    text = path.read_text() if text is None else text
    return apply_edits(text, edits(path, text))


@pytest.mark.parametrize("name, needle, variable, cause", [
    ("predict_train_mode.py", "probabilities = model(samples)", "model", "`TabularNet()` at line"),
    ("predict_train_mode.py", "return net(batch)", "net", "in `score()`, called at line"),
    ("export_train_mode.py", "torch.jit.trace(model, example)", "model", "`nn.Sequential()`"),
    ("export_train_mode.py", "torch.export.export(model", "model", "`nn.Sequential()`"),
    ("export_train_mode.py", "torch.onnx.export(model", "model", "`nn.Sequential()`"),
    ("trainer_leak.py", "return self.model(x)", "self.model", "in `predict()`, called at"),
    ("validate_in_train_mode.py", "binary_cross_entropy_with_logits(tagger(x)", "tagger",
     "`AudioTagger()` at line"),
])
def test_finds_inference_in_training_mode_in_fixture_scripts(name, needle, variable, cause):
    path = SCRIPTS / name
    found = bn003(lint_specs([str(path)], select=["BN003"]))
    line = line_of(path, needle)
    [finding] = [f for f in found if f.line == line]
    assert finding.path == f"fixtures/scripts/{name}"
    assert finding.message.startswith(f"`{variable}` ")
    assert cause in finding.message
    assert finding.fix == "unsafe" and finding.model is None
    # the column is where the call starts: the model's name, or the export function's
    text = path.read_text().splitlines()[line - 1]
    assert text[finding.col - 1:].startswith((variable, "torch."))


def test_names_where_the_training_mode_was_set(lint_code):
    [finding] = script(lint_code, """
model = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
model.eval()
model.train()
for x in torch.randn(4, 16, 8):
    model(x).pow(2).mean().backward()
    optimizer.step()
with torch.no_grad():
    model(torch.randn(4, 8))
""")
    assert finding.line == 12 and finding.col == 5
    assert "set by `model.train()` at line 7" in finding.message
    assert "inside `torch.no_grad()`" in finding.message


@pytest.mark.parametrize("name", [
    "predict_eval_mode.py", "export_eval_mode.py", "frozen_backbone.py", "mode_variable.py",
    "unknown_mode.py", "train_val_ok.py", "train_val_leak.py",
])
def test_silent_on_scripts_that_run_inference_in_eval_mode(name):
    assert bn003(lint_specs([str(SCRIPTS / name)], select=["BN003"])) == []


@pytest.mark.parametrize("body", [
    # the mode is chosen by a condition, on both sides
    "m = nn.BatchNorm1d(4)\nif torch.cuda.is_available():\n    m.eval()\nelse:\n    m.train()\n"
    "with torch.no_grad():\n    m(torch.randn(2, 4))\n",
    # set from a value bnlint cannot know
    "import sys\nm = nn.BatchNorm1d(4)\nm.train('--train' in sys.argv)\n"
    "with torch.no_grad():\n    m(torch.randn(2, 4))\n",
    # a constant in a variable is followed
    "m = nn.BatchNorm1d(4)\ntraining = False\nm.train(training)\n"
    "with torch.no_grad():\n    m(torch.randn(2, 4))\n",
    # torch.nn layers written out without any BatchNorm
    "mlp = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.1), nn.Linear(8, 2))\n"
    "with torch.no_grad():\n    mlp(torch.randn(2, 4))\n",
    # handed to a function bnlint cannot see, which may switch the mode
    "from helpers import prepare\nm = nn.BatchNorm1d(4)\nprepare(m)\n"
    "with torch.no_grad():\n    m(torch.randn(2, 4))\n",
    # loaded: a pickled module keeps the mode it was saved in
    "m = torch.load('m.pt')\nwith torch.no_grad():\n    m(torch.randn(2, 4))\n",
    # only the BatchNorm layers switched, through apply()
    "def freeze(layer):\n    if isinstance(layer, nn.BatchNorm1d):\n        layer.eval()\n"
    "m = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))\nm.apply(freeze)\n"
    "with torch.no_grad():\n    m(torch.randn(2, 4))\n",
    # DistributedDataParallel's .module is the model itself
    "from torch.nn.parallel import DistributedDataParallel as DDP\n"
    "m = DDP(nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)))\nm.module.eval()\n"
    "with torch.no_grad():\n    m(torch.randn(2, 4))\n",
    # a module of the file that holds no BatchNorm (a lock is no layer)
    "import threading\nclass Head(nn.Module):\n    def __init__(self):\n"
    "        super().__init__()\n        self.lock = threading.Lock()\n"
    "        self.fc = nn.Linear(4, 2)\n    def forward(self, x):\n        return self.fc(x)\n"
    "torch.jit.script(Head()).save('head.pt')\n",
    # a class imported from elsewhere is a model only once it is used as one
    "from tokenizers import Tokenizer\ntok = Tokenizer('vocab.json')\n"
    "with torch.no_grad():\n    tok('some text')\n",
    # the TorchScript ONNX exporter switches to eval mode by itself
    "m = nn.BatchNorm1d(4)\ntorch.onnx.export(m, (torch.randn(2, 4),), 'm.onnx', dynamo=False)\n",
    # a training graph exported on purpose
    "m = nn.BatchNorm1d(4)\ntorch.onnx.export(m, (torch.randn(2, 4),), 'm.onnx',\n"
    "                  training=torch.onnx.TrainingMode.TRAINING)\n"
    "torch.export.export_for_training(m, (torch.randn(2, 4),))\n",
    # re-estimating the statistics on purpose: train() and straight to a no_grad pass
    "m = nn.BatchNorm1d(4)\nm.train()\nwith torch.no_grad():\n    for x in torch.randn(3, 2, 4):\n"
    "        m(x)\n",
    # checked, then restored around the inference
    "m = nn.BatchNorm1d(4)\nwas = m.training\nm.eval()\nwith torch.no_grad():\n"
    "    m(torch.randn(2, 4))\nm.train(was)\n",
])
def test_silent_where_the_mode_is_eval_or_cannot_be_known(lint_code, body):
    assert script(lint_code, body) == []


def test_silent_on_a_model_parameter_with_no_call_site(lint_code):
    """The documented choice: the caller may well have called .eval(); bnlint cannot know."""
    assert script(lint_code, """
def predict(model, x):
    with torch.no_grad():
        return model(x)

print(predict)
""") == []


@pytest.mark.parametrize("body, line", [
    # a closure over a model built in the enclosing function, run from __main__
    ("def main():\n    model = nn.BatchNorm1d(4)\n    def infer(x):\n        with torch.no_grad():\n"
    "            return model(x)\n    return infer(torch.randn(2, 4))\n\n"
    "if __name__ == '__main__':\n    main()\n", 7),
    # a class imported from another file, confirmed a module by load_state_dict
    ("from models import ResNet\nnet = ResNet(depth=18)\nnet.load_state_dict(torch.load('r.pt'))\n"
    "with torch.no_grad():\n    preds = [net(x) for x in torch.randn(3, 2, 3, 8, 8)]\n", 7),
    # a bare @torch.no_grad decorator on a module's own method
    ("class Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
    "        self.bn = nn.BatchNorm1d(4)\n    def forward(self, x):\n        return self.bn(x)\n"
    "    @torch.no_grad\n    def predict(self, x):\n        return self(x)\n\n"
    "Net().predict(torch.randn(2, 4))\n", 11),
    # a static factory method returning a new module
    ("class Zoo:\n    @staticmethod\n    def build():\n        return nn.BatchNorm1d(4)\n\n"
    "m = Zoo.build()\nwith torch.inference_mode():\n    m(torch.randn(2, 4))\n", 10),
    # BatchNorm inside a nested container
    ("deep = nn.Sequential(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)), nn.ReLU())\n"
     "with torch.no_grad():\n    deep(torch.randn(2, 3, 8, 8))\n", 5),
    # eval on one path only
    ("m = nn.BatchNorm1d(4)\nif torch.cuda.is_available():\n    m.eval()\n"
    "with torch.no_grad():\n    m(torch.randn(2, 4))\n", 7),
    # autograd switched off for the rest of the script
    ("m = nn.BatchNorm1d(4)\ntorch.set_grad_enabled(False)\nm(torch.randn(2, 4))\n", 5),
    # scripting keeps the training flag for whoever loads the module
    ("m = nn.BatchNorm1d(4)\ntorch.jit.script(m).save('m.pt')\n", 4),
    # an init function given to apply() does not switch modes
    ("def init(layer):\n    if isinstance(layer, nn.Linear):\n        nn.init.zeros_(layer.weight)\n"
    "m = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))\nm.apply(init)\n"
    "with torch.no_grad():\n    m(torch.randn(2, 4))\n", 9),
])
def test_follows_real_code_to_the_inference(lint_code, body, line):
    [finding] = script(lint_code, body)
    assert finding.line == line


def test_self_model_set_in_init(lint_code):
    """A method with no caller in the file sees ``self`` as ``__init__`` leaves it."""
    found = script(lint_code, """
class Served:
    def __init__(self, model):
        self.model = model.eval()

    @torch.no_grad()
    def __call__(self, x):
        return self.model(x)


class Forgot:
    def __init__(self):
        self.model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
        self.model.load_state_dict(torch.load("weights.pt"))

    @torch.no_grad()
    def __call__(self, x):
        return self.model(x)

print(Served, Forgot)
""")
    assert [f.line for f in found] == [20]
    assert "`nn.Sequential()` at line 15" in found[0].message


def test_fix_inserts_eval_before_the_inference_block(lint_text):
    path = SCRIPTS / "predict_train_mode.py"
    before = path.read_text()
    after = fixed(path)
    block = before.splitlines().index("with torch.no_grad():")
    assert after.splitlines()[block + 1:block + 3] == ["model.eval()", "with torch.no_grad():"]
    # the decorated helper gets it at the top of its body
    assert "def score(net, batch):\n    net.eval()\n    return net(batch)" in after
    assert bn003(lint_text(after)) == []


def test_fix_of_several_exports_is_one_line(lint_text):
    path = SCRIPTS / "export_train_mode.py"
    after = fixed(path)
    assert after.count("model.eval()") == 1
    assert after.index("model.eval()") < after.index("torch.jit.trace(")
    assert bn003(lint_text(after)) == []


def test_fix_restores_training_mode_when_training_continues(lint_text):
    """Inserting only .eval() before a validation inside the epoch loop would train the next
    epochs in eval mode (BN004); the fix puts training mode back after the block."""
    path = SCRIPTS / "validate_in_train_mode.py"
    after = fixed(path)
    lines = after.splitlines()
    start = lines.index("    tagger.eval()")
    assert lines[start + 1] == "    with torch.no_grad():"
    assert lines[start + 4] == "    tagger.train()"
    assert lint_text(after).findings == []
    compile(after, "fixed.py", "exec")


def test_fixed_script_runs_and_predicts_in_eval_mode(tmp_path):
    path = tmp_path / "predict.py"
    path.write_text(fixed(SCRIPTS / "predict_train_mode.py") + "print(model.training)\n")
    result = subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "False"


def test_no_fix_where_a_line_cannot_be_inserted(lint_code, tmp_path):
    body = "m = nn.BatchNorm1d(4)\nif True: torch.jit.trace(m, torch.randn(2, 4))\n"
    [finding] = script(lint_code, body)
    assert finding.fix is None
    path = tmp_path / "job.py"
    assert edits(path, path.read_text()) == []


@pytest.mark.parametrize("comment", ["# bnlint: ignore[BN003]", "# noqa: BN003", "# noqa"])
def test_suppressed_by_a_comment_on_the_inference_line(lint_code, tmp_path, comment):
    body = f"m = nn.BatchNorm1d(4)\nwith torch.no_grad():\n    m(torch.randn(2, 4))  {comment}\n"
    assert script(lint_code, body) == []
    path = tmp_path / "job.py"
    assert edits(path, path.read_text()) == []


def test_other_codes_do_not_suppress_it(lint_code):
    body = "m = nn.BatchNorm1d(4)\nwith torch.no_grad():\n    m(torch.randn(2, 4))  # noqa: BN001\n"
    assert len(script(lint_code, body)) == 1


def test_linting_the_scripts_imports_nothing():
    """The scripts are read, never run: neither they nor torch are imported."""
    code = (
        "import sys\nfrom bnlint.lint import lint_specs\n"
        "report = lint_specs(['fixtures/scripts'])\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert all(m.status == 'skipped' for m in report.models)\n"
        "print(sorted({f.code for f in report.findings}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['BN003', 'BN004']"



def test_command_line_diff_then_unsafe_fix(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from bnlint.cli import main

    script_path = tmp_path / "validate.py"
    original = (SCRIPTS / "validate_in_train_mode.py").read_text()
    script_path.write_text(original)
    monkeypatch.chdir(tmp_path)
    diff = CliRunner().invoke(main, ["validate.py", "--diff", "--unsafe-fixes"])
    assert "+    tagger.eval()\n     with torch.no_grad():" in diff.output
    assert script_path.read_text() == original
    CliRunner().invoke(main, ["validate.py", "--fix"])  # the fix is unsafe: not applied
    assert script_path.read_text() == original
    CliRunner().invoke(main, ["validate.py", "--fix", "--unsafe-fixes"])
    assert "    tagger.eval()\n    with torch.no_grad():" in script_path.read_text()
    again = CliRunner().invoke(main, ["validate.py"])
    assert again.exit_code == 0 and "BN00" not in again.output


def test_a_model_without_a_variable_is_named_by_its_expression(lint_code):
    """Nothing to call `.eval()` on by name: the message names the expression and says what to
    do, and no fix is offered."""
    [finding] = script(lint_code, "class Net(nn.Module):\n    def __init__(self):\n"
                       "        super().__init__()\n        self.bn = nn.BatchNorm1d(4)\n"
                       "    def forward(self, x):\n        return self.bn(x)\n"
                       "traced = torch.jit.trace(Net(), torch.randn(2, 4))\n")
    assert finding.message.startswith("`Net()` is passed to `torch.jit.trace` but may be in "
                                      "training mode")
    assert finding.message.endswith("Call `.eval()` on the model first.")
    assert "the module" not in finding.message and finding.fix is None
