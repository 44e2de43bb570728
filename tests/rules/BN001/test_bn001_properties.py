"""Property tests: on random conv/linear -> (paths BN001 looks through) -> BatchNorm ->
activation stacks, the BN001 fix leaves the function unchanged, in training and eval mode,
after training has moved weights and running statistics. Computed in float64, so the
comparison is tight (torch's float64 defaults, rtol = atol = 1e-7)."""

from dataclasses import dataclass

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import bnlint
from conftest import train

pytestmark = pytest.mark.usefixtures("one_thread")

PATHS = ("direct", "maxpool", "avgpool", "identity", "residual", "subtract", "flatten")
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "leaky": nn.LeakyReLU}
SIZE = 6


@dataclass(frozen=True)
class Block:
    width: int
    bias: bool
    path: str
    affine: bool
    track: bool
    momentum: float | None
    activation: str


def blocks(path_choices):
    return st.builds(
        Block,
        width=st.integers(2, 6),
        bias=st.booleans(),
        path=st.sampled_from(path_choices),
        affine=st.booleans(),
        track=st.booleans(),
        momentum=st.sampled_from([0.1, 0.5, None]),
        activation=st.sampled_from(sorted(ACTIVATIONS)),
    )


class Stack(nn.Module):
    """Conv blocks on 6x6 images, then (after a flatten) Linear blocks, then a classifier."""

    def __init__(self, conv_blocks: list[Block], linear_blocks: list[Block]):
        super().__init__()
        self.convs = nn.ModuleList()
        channels, size = 3, SIZE
        self.plan = []
        for block in conv_blocks:
            layer = nn.Conv2d(channels, block.width, 3, padding=1, bias=block.bias)
            skip = nn.Conv2d(channels, block.width, 1, bias=False)
            via = {"maxpool": nn.MaxPool2d(2, stride=1), "avgpool": nn.AvgPool2d(2, stride=1),
                   "identity": nn.Identity()}.get(block.path, nn.Identity())
            if block.path in ("maxpool", "avgpool"):
                size -= 1
            features = block.width * size * size if block.path == "flatten" else block.width
            norm = (nn.BatchNorm1d if block.path == "flatten" else nn.BatchNorm2d)(
                features, affine=block.affine, track_running_stats=block.track,
                momentum=block.momentum)
            self.convs.append(nn.ModuleList([layer, skip, via, norm,
                                             ACTIVATIONS[block.activation]()]))
            self.plan.append(block.path)
            if block.path == "flatten":
                channels = features
                break
            channels = block.width
        self.flat_features = channels if self.plan[-1:] == ["flatten"] else channels * size * size
        features = self.flat_features
        self.linears = nn.ModuleList()
        for block in linear_blocks:
            norm = nn.BatchNorm1d(block.width, affine=block.affine,
                                  track_running_stats=block.track, momentum=block.momentum)
            self.linears.append(nn.ModuleList([
                nn.Linear(features, block.width, bias=block.bias), norm,
                ACTIVATIONS[block.activation]()]))
            features = block.width
        self.out = nn.Linear(features, 3)

    def forward(self, x):
        for (layer, skip, via, norm, act), path in zip(self.convs, self.plan):
            y = layer(x)
            if path == "residual":
                y = y + skip(x)
            elif path == "subtract":
                y = skip(x) - y
            elif path == "flatten":
                y = torch.flatten(y, 1)
            x = act(norm(via(y)))
        x = x.flatten(1)
        for layer, norm, act in self.linears:
            x = act(norm(layer(x)))
        return self.out(x)


def outputs(model, x, seed):
    torch.manual_seed(seed)
    return model(x)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conv_blocks=st.lists(blocks(PATHS), min_size=1, max_size=3),
       linear_blocks=st.lists(blocks(("direct",)), max_size=2),
       seed=st.integers(0, 2**16))
def test_bn001_fix_preserves_random_stacks(conv_blocks, linear_blocks, seed):
    torch.manual_seed(seed)
    model = Stack(conv_blocks, linear_blocks).double()
    shape = (5, 3, SIZE, SIZE)
    with torch.random.fork_rng():
        train(model, shape, steps=2, seed=seed)
    biased = sum(b.bias for b in conv_blocks[:len(model.plan)]) + sum(
        b.bias for b in linear_blocks)
    result = bnlint.fix(model)
    assert len(result.applied) == biased
    assert result.skipped == []
    fixed = result.model
    assert not any(f.code == "BN001" for f in bnlint.check(fixed).findings)
    x = torch.randn(shape, dtype=torch.float64) * 3 + 1.5
    for mode in (True, False):
        model.train(mode)
        fixed.train(mode)
        torch.testing.assert_close(outputs(fixed, x, seed), outputs(model, x, seed))
