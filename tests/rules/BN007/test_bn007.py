"""BN007: a BatchNorm with Keras's momentum convention. Case files in tests/rules/BN007 cover
where it is found and the source edit; these cover the value read from the built module, the
graph fix and the message."""

import pytest
import torch
from torch import nn

import bnlint


def block(bn: nn.Module) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), bn, nn.ReLU())


@pytest.mark.parametrize("momentum", [0.51, 0.9, 0.99, 0.997, 0.9997])
def test_keras_values_are_found_on_the_module(momentum):
    [finding] = bnlint.check(block(nn.BatchNorm2d(8, momentum=momentum)), select=["BN007"]).findings
    assert (finding.code, finding.module, finding.fix) == ("BN007", "1", "unsafe")
    assert f"momentum={momentum:g}" in finding.message
    assert f"Use momentum={1 - momentum:.4g}" in finding.message


@pytest.mark.parametrize("bn", [
    nn.BatchNorm2d(8), nn.BatchNorm2d(8, momentum=0.5), nn.BatchNorm2d(8, momentum=None),
    nn.BatchNorm2d(8, momentum=1.0), nn.BatchNorm2d(8, momentum=0.99, track_running_stats=False),
], ids=["default", "half", "cumulative", "last-batch", "batch-statistics"])
def test_pytorch_values_and_unused_momenta_are_silent(bn):
    assert bnlint.check(block(bn), select=["BN007"]).findings == []


def test_a_value_set_after_construction_is_found():
    model = block(nn.BatchNorm2d(8))
    model[1].momentum = 0.9
    [finding] = bnlint.check(model, select=["BN007"]).findings
    assert finding.module == "1"


def test_keras_eps_is_mentioned_only_when_it_travels_with_it():
    [with_eps] = bnlint.check(block(nn.BatchNorm2d(8, eps=1e-3, momentum=0.99)),
                              select=["BN007"]).findings
    [without] = bnlint.check(block(nn.BatchNorm2d(8, momentum=0.99)), select=["BN007"]).findings
    assert "eps=1e-3 is Keras's default" in with_eps.message
    assert "eps" not in without.message


def test_a_batchnorm_the_forward_never_calls_is_not_reported():
    """Its momentum never touches a statistic; the model's other BatchNorm still counts."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, bias=False)
            self.used = nn.BatchNorm2d(8, momentum=0.9)
            self.spare = nn.BatchNorm2d(8, momentum=0.9)

        def forward(self, x):
            return self.used(self.conv(x))

    assert [f.module for f in bnlint.check(Net(), select=["BN007"]).findings] == ["used"]


def test_fix_sets_pytorch_momentum_and_keeps_outputs_and_the_original():
    torch.manual_seed(0)
    model = block(nn.BatchNorm2d(8, eps=1e-3, momentum=0.99))
    model(torch.randn(4, 3, 10, 10))  # move the running statistics
    result = bnlint.fix(model, select=["BN007"], unsafe=True)
    fixed = result.model
    assert [(e.code, e.module) for e in result.applied] == [("BN007", "1")]
    assert (fixed[1].momentum, fixed[1].eps) == (pytest.approx(0.01), 1e-3)
    assert model[1].momentum == 0.99
    x = torch.randn(4, 3, 10, 10)
    for mode in (False, True):
        model.train(mode), fixed.train(mode)
        torch.testing.assert_close(fixed(x), model(x))
    assert bnlint.check(fixed, select=["BN007"]).findings == []


def test_fix_needs_unsafe_fixes():
    result = bnlint.fix(block(nn.BatchNorm2d(8, momentum=0.99)), select=["BN007"])
    assert result.applied == [] and result.model[1].momentum == 0.99
    assert "unsafe" in result.skipped[0].reason



PORTED = """\
from torch import nn


def conv_bn(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, bias=False), nn.BatchNorm2d(cout, momentum=0.999))


def backbone():
    return nn.Sequential(conv_bn(3, 8), conv_bn(8, 8))


def finetuned():
    model = backbone()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 0.9997
    return model
"""


def test_the_call_is_edited_only_when_every_batchnorm_it_built_has_its_momentum(tmp_path):
    """A port that also sets the momentum after construction in one model: one finding for the
    call, and no edit, since 1 - 0.999 would not fix the BatchNorms set to 0.9997."""
    from conftest import run_bnlint

    (tmp_path / "ported.py").write_text(PORTED, encoding="utf-8")
    both = run_bnlint("ported.py:backbone()", "ported.py:finetuned()", "--select", "BN007",
                      "--diff", "--unsafe-fixes", cwd=tmp_path)
    assert both.stdout == "" and "different momenta (0.999, 0.9997)" in both.stderr
    one = run_bnlint("ported.py:backbone()", "--select", "BN007", "--diff", "--unsafe-fixes",
                     cwd=tmp_path)
    assert "-    return nn.Sequential(nn.Conv2d(cin, cout, 3, bias=False), nn.BatchNorm2d(cout, " \
        "momentum=0.999))" in one.stdout and "momentum=0.001))" in one.stdout
