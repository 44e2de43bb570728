"""BN002's graph fix (bnlint.fix): unsafe, made only when asked, and refused where the
activation's output feeds other layers or a move would change the layout BatchNorm sees."""

import pytest
import torch
from torch import fx, nn

import bnlint
from fixtures_models import fixture_module

pytestmark = pytest.mark.usefixtures("one_thread")


def test_bn002_is_unsafe_and_only_applied_when_asked():
    model = fixture_module("act_before_bn").SmallNet()
    safe = bnlint.fix(model)
    assert safe.applied == []
    assert {e.module for e in safe.skipped} == {"block1.bn", "bn2", "head.4"}
    assert all("unsafe" in e.reason for e in safe.skipped)
    unsafe = bnlint.fix(model, unsafe=True)
    assert {e.module for e in unsafe.applied} == {"block1.bn", "bn2", "head.4"}
    fixed = unsafe.model
    assert isinstance(fixed, fx.GraphModule)
    assert set(fixed.state_dict()) == set(model.state_dict())
    fixed.load_state_dict(model.state_dict())
    assert bnlint.check(fixed, select=["BN002"]).findings == []
    order = [n.target for n in fixed.graph.nodes if n.op == "call_module"]
    assert order.index("head.4") < order.index("head.2") < order.index("head.3")
    assert fixed(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_bn002_refuses_when_the_activation_output_is_reused():
    result = bnlint.fix(fixture_module("act_before_bn").SkipNet(), unsafe=True)
    assert result.applied == []
    assert "also feeds other layers" in result.skipped[0].reason


class FlattenThenNorm(nn.Module):
    """ReLU, flatten, BatchNorm1d over every position: BatchNorm2d would be needed before."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=False)
        self.bn = nn.BatchNorm1d(4 * 4 * 4)

    def forward(self, x):
        return self.bn(torch.flatten(torch.relu(self.conv(x)), 1))


def test_bn002_is_not_offered_where_moving_would_change_the_shape_batchnorm_sees():
    [finding] = bnlint.check(FlattenThenNorm()).findings
    assert finding.fix is None
    assert "by hand (`torch.flatten` between them changes the layout" in finding.message
    result = bnlint.fix(FlattenThenNorm(), unsafe=True)
    assert result.applied == []
    assert "changes the layout" in result.skipped[0].reason
