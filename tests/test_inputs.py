"""Example inputs: one order (--example, example_input(), --input-shape, INPUT_SHAPE, probing)
for the command line, the API and the benchmark; errors in one line; the user's model left
alone while an input is looked for."""

import json
import sys
import textwrap
from collections import namedtuple

import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner

import bnlint
from bnlint import engine, inputs
from bnlint.bench import BenchError, tasks
from bnlint.cli import main
from bnlint.inputs import Example, ExampleError, as_example, resolve
from bnlint.load import build, load
from fixtures_models import fixture_module

NET = """
import torch
import torch.nn as nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 8)
        self.bn = nn.BatchNorm1d(8)

    def forward(self, x):
        return self.bn(self.fc(x))
"""
EXAMPLE_INPUT = """

def example_input():
    return torch.randn(3, 4)
"""
GNN = """
import torch
import torch.nn as nn


class GraphBatch:
    \"\"\"Node features of several graphs stacked, and each graph's node count.\"\"\"

    def __init__(self, x, sizes):
        self.x = x
        self.sizes = sizes


class GIN(nn.Module):
    def __init__(self):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16))
        self.bn = nn.BatchNorm1d(16)

    def forward(self, batch):
        h = self.bn(self.mlp(batch.x))
        return torch.stack([part.sum(0) for part in h.split(batch.sizes)])
"""


def run(*args):
    return CliRunner().invoke(main, list(args))


def write(tmp_path, code: str, name: str = "model_file.py") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(code), encoding="utf-8")
    return str(path)


def model_inputs(*args) -> dict[str, str]:
    """Each analysed model's ``input``, as the JSON report gives it."""
    result = run(*args, "--format", "json")
    assert result.exit_code in (0, 1), result.output
    return {m["spec"]: m["input"] for m in json.loads(result.stdout)["models"]}


@pytest.fixture
def analysed(monkeypatch):
    """What ``engine.analyse`` is given: (model, example) per call, models and examples as
    the analysis receives them."""
    seen = []
    real = engine.analyse

    def spy(model, name, codes, example=None, **options):
        seen.append((model, example))
        return real(model, name, codes, example=example, **options)

    monkeypatch.setattr(engine, "analyse", spy)
    return seen


# --- what a user gives -------------------------------------------------------------------------

Batch = namedtuple("Batch", "x mask")
X, Y = torch.randn(2, 3), torch.randn(2, 5)


@pytest.mark.parametrize("value, args, kwargs", [
    (X, (X,), {}),
    ((X, Y), (X, Y), {}),
    (((X,), {"mask": Y}), (X,), {"mask": Y}),
    ((X, {"mask": Y}), (X, {"mask": Y}), {}),  # a dict after a tensor is an argument
    ([X, Y], ([X, Y],), {}),  # a list is one argument: a forward taking a list of graphs
    (Batch(X, Y), (Batch(X, Y),), {}),  # a named tuple is a batch object, not arguments
], ids=["tensor", "args", "args-kwargs", "tensor-and-dict", "list", "namedtuple"])
def test_what_a_user_gives_becomes_the_forwards_arguments(value, args, kwargs):
    example = as_example(value)
    assert example.args == args and example.kwargs.keys() == kwargs.keys()
    assert example.origin == "given"
    given = Example((X,), {}, "from somewhere")
    assert as_example(given) is given


def test_description_names_each_argument_and_the_origin():
    assert as_example(X, "from --example").describe() == "a tensor (2, 3) from --example"
    assert as_example(((X, [1, 2]), {"batch": Batch(X, Y)})).describe() == (
        "a tensor (2, 3), a list of 2, batch=a Batch given")
    assert as_example(X).shape() == (3,) and as_example((X, Y)).shape() is None


# --- the order ---------------------------------------------------------------------------------

@pytest.mark.parametrize("code, options, expected", [
    (NET + "\nINPUT_SHAPE = (4,)\n" + EXAMPLE_INPUT, [], "a tensor (3, 4) from example_input()"),
    (NET + "\nINPUT_SHAPE = (4,)\n" + EXAMPLE_INPUT, ["--input-shape", "4"],
     "a tensor (3, 4) from example_input()"),
    (NET + EXAMPLE_INPUT, ["--example", "torch:zeros(5, 4)"], "a tensor (5, 4) from --example"),
    (NET + "\nINPUT_SHAPE = (4,)\n", ["--input-shape", "4"], "a tensor (2, 4) from --input-shape"),
    (NET + "\nINPUT_SHAPE = (4,)\n", [], "a tensor (2, 4) from INPUT_SHAPE"),
    (NET.replace("    def __init__", "    INPUT_SHAPE = (1, 4)\n\n    def __init__")
     + "\nINPUT_SHAPE = (4,)\n", [], "a tensor (2, 1, 4) from INPUT_SHAPE"),
    (NET, [], None),  # linting runs no model to probe for one
], ids=["function-first", "function-beats-option", "example-beats-function", "option",
        "file-constant", "class-constant-first", "none"])
def test_precedence_on_the_command_line(tmp_path, code, options, expected):
    path = write(tmp_path, code)
    assert model_inputs(path, *options) == {f"{path}:Net()": expected}


def test_example_input_is_found_in_the_file_that_names_the_model(tmp_path):
    """A factory in one file building a class of another: the factory's file gives the input."""
    write(tmp_path, NET, "nets.py")
    factory = write(tmp_path, "import torch\nfrom nets import Net\n\n\ndef make():\n"
                    "    return Net()\n" + EXAMPLE_INPUT, "train_setup.py")
    inputs_ = model_inputs(f"{factory}:make()")
    assert inputs_ == {f"{factory}:make()": "a tensor (3, 4) from example_input()"}


def test_verbose_text_says_which_input(tmp_path):
    path = write(tmp_path, NET + "\nINPUT_SHAPE = (4,)\n")
    result = run(path, "-v")
    assert "input: a tensor (2, 4) from INPUT_SHAPE" in result.output
    assert "input: none given" in run(write(tmp_path, NET, "plain.py"), "-v").output


def test_resolve_falls_through_to_probing():
    model = nn.Sequential(nn.Linear(7, 4), nn.BatchNorm1d(4))
    found = resolve(model)
    assert found.origin == "found by probing" and found.shape() == (7,)
    assert resolve(model, probing=False) is None
    assert resolve(model, input_shape=(7,)).origin == "from --input-shape"
    assert resolve(model, torch.randn(2, 7)).origin == "given"


def test_api_check_takes_every_form_of_example(analysed):
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8))
    x, mask = torch.randn(2, 4), torch.ones(2)
    forms = [x, (x,), ((x,), {"mask": mask}), Example((x,), {}, "from a test")]
    for form in forms:
        report = bnlint.check(model, example=form)
        assert [f.code for f in report.findings] == ["BN001"]
    examples = [example for _, example in analysed]
    assert [e.args[0] is x for e in examples] == [True] * 4
    assert examples[2].kwargs == {"mask": mask} and examples[3].origin == "from a test"
    assert report.to_dict()["models"][0]["input"] == "a tensor (2, 4) from a test"
    bnlint.check(model)
    assert analysed[-1][1] is None  # check never runs the model to probe


# --- --example end to end ---------------------------------------------------------------------

def test_example_with_a_custom_batch_object_reaches_the_analysis(tmp_path, analysed, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, GNN, "gnn.py")
    result = run("gnn.py:GIN()", "--example", "gnn.py:GraphBatch(torch.randn(10, 6), [4, 6])",
                 "--format", "json")
    assert result.exit_code in (0, 1), result.output
    assert json.loads(result.stdout)["models"][0]["input"] == "a GraphBatch from --example"
    [(model, example)] = analysed
    [batch] = example.args
    # one import of gnn.py: the example's class is the one the model's forward knows
    assert type(batch) is sys.modules[type(model).__module__].GraphBatch
    assert batch.x.shape == (10, 6) and batch.sizes == [4, 6]
    assert example.origin == "from --example"


@pytest.mark.parametrize("expr, args, kwargs", [
    ("[torch.randn(4, 6), torch.randn(6, 6)]", "a list of 2", {}),
    ("((torch.randn(2, 6),), {'mask': None})", "a tensor (2, 6)", {"mask": None}),
])
def test_example_with_a_list_or_keyword_arguments(tmp_path, analysed, monkeypatch, expr, args,
                                                  kwargs):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, GNN, "gnn.py")
    result = run("gnn.py:GIN()", "--example", f"gnn.py:{expr}")
    assert result.exit_code in (0, 1), result.output
    [(_, example)] = analysed
    assert example.describe().startswith(args) and example.kwargs == kwargs


def test_example_goes_to_every_model_named():
    result = run("fixtures/vgg.py", "fixtures/act_before_bn.py", "--example",
                 "torch:randn(2, 3, 32, 32)", "--format", "json")
    assert result.exit_code == 1
    inputs = [m["input"] for m in json.loads(result.stdout)["models"]]
    assert inputs == ["a tensor (2, 3, 32, 32) from --example"] * 4


def test_bench_trains_on_the_input_the_lint_run_found():
    result = run("fixtures/deep_plain.py:PlainCNN()", "--select", "BN005", "--bench",
                 "--steps", "2", "--seeds", "1", "--example", "torch:randn(2, 3, 16, 16)")
    assert result.exit_code == 1, result.output
    assert "input (3, 16, 16) from --example" in result.output


def test_bench_takes_example_input_from_the_file(tmp_path):
    [candidate] = load([write(tmp_path, NET + EXAMPLE_INPUT)]).candidates
    model, _ = build(candidate)
    shape, origin, out = tasks.find_input_shape(model, (9,), "cpu")
    assert (shape, origin, tuple(out.shape)) == ((4,), "from example_input()", (3, 8))


def test_bench_needs_one_tensor_for_its_synthetic_task():
    model = nn.Sequential(nn.Linear(4, 8))
    with pytest.raises(BenchError, match="feeds the model one tensor.*--data"):
        tasks.find_input_shape(model, None, "cpu", example=(torch.randn(2, 4), torch.randn(2)))



# --- errors ------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, message", [
    ("missing.py:x", "--example missing.py:x: no such file: missing.py"),
    ("torch.randn(2, 3)", "give it as file.py:EXPR or package.module:EXPR"),
    ("fixtures/vgg.py:(", "invalid expression '('"),
    ("fixtures/vgg.py:undefined_name", "evaluating it failed: NameError: name 'undefined_name'"),
    ("no_such_package_xyz:thing", "import failed: ModuleNotFoundError"),
])
def test_an_example_that_fails_is_one_line_and_exit_2(spec, message):
    result = run("fixtures/vgg.py", "--example", spec)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert result.stdout == ""


def test_an_example_that_raises_shows_its_traceback_with_verbose():
    result = run("fixtures/vgg.py", "--example", "torch:randn(-1)", "-v")
    assert result.exit_code == 2 and "Traceback" in result.output


@pytest.mark.parametrize("extra, message", [
    ("\ndef example_input():\n    raise ValueError('no data here')\n",
     "example_input() in {path} failed: ValueError: no data here"),
    ("\ndef example_input():\n    pass\n", "example_input() in {path} returned None"),
    ("\nexample_input = 3\n", "example_input in {path} must be a function"),
    ("\nINPUT_SHAPE = 'big'\n", "INPUT_SHAPE in {path} must be a tuple of ints, not 'big'"),
])
def test_a_broken_input_in_the_file_is_that_models_error(tmp_path, extra, message):
    path = write(tmp_path, NET + extra)
    result = run(path)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"{path}:Net(): error {message.format(path=path)}" in result.output


def test_input_options_do_not_go_with_static():
    for option in (["--example", "torch:randn(2)"], ["--input-shape", "3"]):
        result = run("fixtures/vgg.py", "--static", *option)
        assert result.exit_code == 2 and "--static runs no model" in result.output


def test_input_shape_works_without_bench():
    result = run("fixtures/vgg.py", "--input-shape", "3,32,32", "-v")
    assert result.exit_code == 1
    assert "input: a tensor (2, 3, 32, 32) from --input-shape" in result.output


def test_help_gives_the_order():
    text = " ".join(run("--help").output.split())
    assert ("--example; example_input() in the model's file; --input-shape; INPUT_SHAPE on the "
            "model's class or in its file") in text


# --- probing leaves the model alone ------------------------------------------------------------

def test_probing_runs_a_copy_on_the_meta_device():
    model = fixture_module("vgg").vgg11_small()
    devices = []
    model.register_forward_hook(lambda module, args, out: devices.append(args[0].device.type))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    found = inputs.probe(model)
    assert found.shape() == (3, 32, 32) and devices == ["meta"]
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("on_meta", [False, True], ids=["weights", "meta-built"])
def test_probing_a_forward_that_reads_values_uses_a_copy_with_values(on_meta):
    """DynamicNet branches on ``x.max()``: no meta tensor can answer, a real copy can, also
    of a model built without weights."""
    with torch.device("meta" if on_meta else "cpu"):
        model = fixture_module("dynamic").DynamicNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    found = inputs.probe(model)
    assert found is not None and found.shape() == (3, 32, 32) and found.origin == "found by probing"
    assert all(t.is_meta == on_meta for t in model.state_dict().values())
    if not on_meta:
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training


def test_probing_finds_nothing_for_a_model_no_shape_fits():
    model = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(8, 2))
    assert inputs.probe(model) is None
    with pytest.raises(ExampleError):
        inputs.load_example("torch:no_such_function()")
