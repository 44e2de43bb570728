"""Checkpoints saved before --fix removed biases: they no longer load into the fixed code with
strict=True, --fix says so, and bnlint.convert_checkpoint (or --convert-checkpoint) makes them
load and compute exactly what they did, in training and in eval mode."""

import pytest
import torch
from torch import nn

import bnlint
from bnlint.checkpoint import CheckpointError
from conftest import FIXTURES, assert_same_function, import_fresh, run_bnlint, train

pytestmark = pytest.mark.usefixtures("one_thread")


def trained_checkpoint(path, build, shape):
    """Train the model the file builds, save its state_dict as a user would, return both."""
    model = build(import_fresh(path))
    train(model, shape, steps=3)
    torch.save(model.state_dict(), path.parent / "old.pt")
    return model, torch.load(path.parent / "old.pt", weights_only=True)


@pytest.mark.parametrize("fixture, build, shape", [
    ("vgg.py", lambda m: m.vgg11_small(), (8, 3, 32, 32)),
    ("fixable.py", lambda m: m.SiameseNet(), (8, 3, 16, 16)),  # one bias into two BatchNorms
    ("fixable.py", lambda m: m.FlattenHeadNet(), (8, 3, 16, 16)),  # repeated per position
    ("fixable.py", lambda m: m.ResidualSubNet(), (8, 3, 16, 16)),  # negated, affine=False
    ("fixable.py", lambda m: m.MLPHead(), (8, 3, 16, 16)),  # no running statistics
])
def test_an_old_checkpoint_loads_into_the_fixed_code_and_computes_the_same(
        project, fixture, build, shape):
    path = project / "model.py"
    path.write_text((FIXTURES / fixture).read_text())
    original, old = trained_checkpoint(path, build, shape)

    fixed_run = run_bnlint(path.name, "--fix")
    assert "bias=False" in path.read_text()
    assert "--convert-checkpoint OLD.pt NEW.pt" in fixed_run.stderr

    fixed = build(import_fresh(path))
    with pytest.raises(RuntimeError, match="Unexpected key"):
        fixed.load_state_dict(old, strict=True)
    converted = bnlint.convert_checkpoint(fixed, old)
    assert set(converted) == set(fixed.state_dict()) < set(old)
    fixed.load_state_dict(converted, strict=True)
    assert_same_function(original, fixed, shape)


def test_the_command_line_converts_a_saved_file_for_a_model_spec(project):
    path = project / "vgg.py"
    path.write_text((FIXTURES / "vgg.py").read_text())
    original, _ = trained_checkpoint(path, lambda m: m.vgg11_small(), (8, 3, 32, 32))
    fixed_run = run_bnlint(path.name, "--fix")
    assert ("convert each with `bnlint SPEC --convert-checkpoint OLD.pt NEW.pt` (SPEC: "
            "'vgg.py:vgg11()', 'vgg.py:vgg11_small()')") in fixed_run.stderr

    result = run_bnlint("vgg.py:vgg11_small()", "--convert-checkpoint", "old.pt", "new.pt")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("new.pt: old.pt for vgg.py:vgg11_small(), with 8 biases "
                                    "folded into BatchNorm's running mean (features.0.bias, ")
    fixed = import_fresh(path).vgg11_small()
    fixed.load_state_dict(torch.load(project / "new.pt", weights_only=True), strict=True)
    assert_same_function(original, fixed, (8, 3, 32, 32))

    written = (project / "new.pt").read_bytes()
    again = run_bnlint("vgg.py:vgg11_small()", "--convert-checkpoint", "old.pt", "new.pt")
    assert again.exit_code == 2 and "new.pt already exists; not overwriting it" in again.stderr
    assert (project / "new.pt").read_bytes() == written


@pytest.mark.parametrize("spec, message", [
    ("vgg.py:vgg11()", "does not fit the fixed model apart from removed biases: it has other "
                       "shapes for classifier.weight"),
    ("vgg.py", "vgg.py must name one model; it defines vgg.py:vgg11(), vgg.py:vgg11_small()"),
])
def test_a_checkpoint_of_another_model_is_refused_in_one_line(project, spec, message):
    path = project / "vgg.py"
    path.write_text((FIXTURES / "vgg.py").read_text())
    trained_checkpoint(path, lambda m: m.vgg11_small(), (8, 3, 32, 32))
    result = run_bnlint(spec, "--convert-checkpoint", "old.pt", "new.pt")
    assert result.exit_code == 2
    assert message in result.stderr and "Traceback" not in result.output
    assert not (project / "new.pt").exists()


def test_a_bias_that_still_matters_is_not_folded():
    """Code edited by hand to drop a bias BatchNorm does not cancel: converting would change
    what the model computes, so it is refused."""
    class Net(nn.Module):
        def __init__(self, bias=True):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, bias=bias)
            self.bn = nn.BatchNorm2d(8)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y

    with pytest.raises(CheckpointError, match=r"`conv.bias` cannot be folded: its output does "
                                              "not only feed BatchNorm"):
        bnlint.convert_checkpoint(Net(bias=False), Net().state_dict())


def test_fixes_that_remove_no_bias_say_nothing_about_checkpoints(project):
    (project / "small.py").write_text((FIXTURES / "act_before_bn.py").read_text())
    result = run_bnlint("small.py", "--fix", "--unsafe-fixes")
    assert "(4 fixed" in result.stdout
    assert "checkpoint" not in result.output.lower()
