"""bnlint.fix, whatever the rule: suppressed findings stay, fixes that make room for others are
followed by them, layers called in several traced parts are left alone, and the caller's model
is never changed. (What each rule's fix computes is tested with the rule, in tests/rules/.)"""

import importlib.util

import pytest
from torch import nn

import bnlint
from bnlint.autofix import CopyError
from conftest import FIXTURES, assert_same_function, train
from fixtures_models import fixture_module

pytestmark = pytest.mark.usefixtures("one_thread")


def test_suppressed_findings_are_not_fixed(tmp_path):
    source = (FIXTURES / "vgg.py").read_text().replace(
        "nn.Conv2d(in_channels, x, kernel_size=3, padding=1),",
        "nn.Conv2d(in_channels, x, kernel_size=3, padding=1),  # noqa: BN001")
    path = tmp_path / "vgg_quiet.py"
    path.write_text(source)
    from bnlint.source import recording

    with recording():
        spec = importlib.util.spec_from_file_location("vgg_quiet", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        model = module.vgg11_small()
    assert bnlint.fix(model).applied == []


class ReorderExposesBias(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.act = nn.ReLU()
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(self.act(self.conv(x)))


def test_a_reorder_that_exposes_a_bias_is_followed_by_its_fold():
    result = bnlint.fix(ReorderExposesBias(), unsafe=True)
    assert [(e.code, e.module) for e in result.applied] == [("BN002", "bn"), ("BN001", "conv")]
    assert bnlint.check(result.model).findings == []


def test_data_dependent_forward_is_fixed_where_one_branch_uses_the_layer():
    dynamic = fixture_module("dynamic")
    model = dynamic.DynamicNet()
    result = bnlint.fix(model)
    assert {e.module for e in result.applied} == {"stages.0.gate.conv", "stages.1.gate.conv"}
    shape = (4, 3, 16, 16)
    train(model, shape, steps=2)
    result = bnlint.fix(model)
    assert_same_function(model, result.model, shape)


class BranchReuse(nn.Module):
    """Both branches call the conv, only one feeds BatchNorm."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        if x.sum() > 0:
            return self.bn(self.conv(x))
        return self.conv(x)


def test_a_layer_used_in_two_branches_is_not_fixed():
    result = bnlint.fix(BranchReuse())
    assert result.applied == []
    assert "another traced part" in result.skipped[0].reason


class HoldsALock(nn.Module):
    def __init__(self):
        super().__init__()
        import threading

        self.lock = threading.Lock()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(self.conv(x))


def test_a_model_that_cannot_be_copied_is_refused_not_changed():
    model = HoldsALock()
    with pytest.raises(CopyError, match="copy.deepcopy failed"):
        bnlint.fix(model)
    assert model.conv.bias is not None
