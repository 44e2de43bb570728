"""BN001's graph fix (bnlint.fix): the fixed model computes what the original computes, in
training and in eval mode, after the running statistics have moved, and while training goes
on; where the bias still matters, the fix is refused with the reason."""

import copy

import pytest
import torch
from torch import nn

import bnlint
from conftest import assert_same_function, train
from fixtures_models import fixture_module

pytestmark = pytest.mark.usefixtures("one_thread")


def fixed_after_training(model, shape, **options):
    train(model, shape, steps=3)
    result = bnlint.fix(model, **options)
    return result


IMAGE = (8, 3, 16, 16)


@pytest.mark.parametrize("name", ["SiameseNet", "FlattenHeadNet", "ResidualSubNet", "MLPHead"])
def test_bn001_fix_keeps_the_function(name):
    model = getattr(fixture_module("fixable"), name)()
    result = fixed_after_training(model, IMAGE)
    assert [e.code for e in result.applied] == ["BN001"]
    assert result.skipped == []
    assert_same_function(model, result.model, IMAGE)


def test_fixed_model_stays_equal_while_both_train_on():
    model = fixture_module("vgg").vgg11_small()
    shape = (8, 3, 32, 32)
    result = fixed_after_training(model, shape)
    assert len(result.applied) == 8
    fixed = result.model
    train(model, shape, steps=2, seed=50)
    train(fixed, shape, steps=2, seed=50)
    assert_same_function(model, fixed, shape)


def test_fix_drops_biases_keeps_class_names_and_leaves_the_original_alone():
    model = fixture_module("vgg").vgg11_small()
    train(model, (8, 3, 32, 32), steps=2)
    before = copy.deepcopy(model.state_dict())
    result = bnlint.fix(model)
    fixed = result.model
    assert type(fixed) is type(model)
    assert fixed.features[0].bias is None and model.features[0].bias is not None
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), f"{key} of the caller's model changed"
    removed = {f"features.{i}.bias" for i in (0, 4, 8, 11, 15, 18, 22, 25)}
    assert set(before) - set(fixed.state_dict()) == removed
    assert set(fixed.state_dict()) <= set(before)
    shifted = fixed.state_dict()["features.1.running_mean"]
    expected = before["features.1.running_mean"] - before["features.0.bias"]
    torch.testing.assert_close(shifted, expected)


def test_fixed_state_dict_loads_into_the_model_built_with_bias_false(tmp_path):
    """The checkpoint path: fix a trained model, load its weights into code that now says
    bias=False, and get the same model."""
    vgg = fixture_module("vgg")
    model = vgg.vgg11_small()
    train(model, (8, 3, 32, 32), steps=2)
    fixed = bnlint.fix(model).model
    rebuilt = vgg.vgg11_small()
    for i in (0, 4, 8, 11, 15, 18, 22, 25):
        rebuilt.features[i].bias = None
    rebuilt.load_state_dict(fixed.state_dict())
    assert_same_function(model, rebuilt, (8, 3, 32, 32))


@pytest.mark.parametrize("name, reason", [
    ("SharedStemNet", "also called where its output does not feed BatchNorm"),
    ("SharedNormNet", "running mean is shared"),
])
def test_bn001_is_refused_where_the_bias_still_matters(name, reason):
    model = getattr(fixture_module("fixable"), name)()
    result = bnlint.fix(model)
    assert result.applied == []
    [skipped] = result.skipped
    assert skipped.code == "BN001" and reason in skipped.reason
    assert next(fixed.bias for fixed in result.model.modules()
                if isinstance(fixed, nn.Conv2d)) is not None
    finding = bnlint.check(model).findings[0]
    assert finding.fix is None and reason in finding.message


def test_a_shared_layer_feeding_batchnorm_on_every_call_is_fixed_once():
    model = fixture_module("fixable").SiameseNet()
    result = fixed_after_training(model, IMAGE)
    assert [(e.code, e.module) for e in result.applied] == [("BN001", "stem")]
    assert set(result.applied[0].related) == {"bn_left", "bn_right"}


class ConvCell(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


class Unrolled(nn.Module):
    """One cell applied twice: conv and BatchNorm are both shared, and every BatchNorm call
    sees the bias once, so the fold is still exact."""

    def __init__(self):
        super().__init__()
        self.cell = ConvCell()

    def forward(self, x):
        return self.cell(self.cell(x))


class DoubledResidual(nn.Module):
    """The bias reaches BatchNorm twice (y + y): twice the bias folds into the running mean."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y + y)


@pytest.mark.parametrize("cls", [Unrolled, DoubledResidual])
def test_fold_counts_every_arrival_of_the_bias(cls):
    model = cls()
    shape = (6, 4, 5, 5)
    result = fixed_after_training(model, shape)
    assert [e.code for e in result.applied] == ["BN001"]
    assert_same_function(model, result.model, shape)


class FunctionalBias(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(4, 3, 3, 3))
        self.bias = nn.Parameter(torch.randn(4))
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(nn.functional.conv2d(x, self.weight, self.bias))


class MyConv(nn.Conv2d):
    def forward(self, x):
        return super().forward(x) * 2


class CustomConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = MyConv(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(self.conv(x))


@pytest.mark.parametrize("cls, reason", [
    (FunctionalBias, "functional call"),
    (CustomConvNet, "defines its own `forward`"),
])
def test_unprovable_folds_are_skipped_with_a_reason(cls, reason):
    result = bnlint.fix(cls())
    assert result.applied == []
    assert [e.code for e in result.skipped] == ["BN001"]
    assert reason in result.skipped[0].reason
