"""BN005: a deep plain network (off by default) and its fix, BatchNorm after every layer."""

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import weight_norm

import bnlint
from bnlint.rules import RULES, deep_plain
from bnlint.trace import trace_model
from conftest import FIXTURES, line_of
from fixtures_models import fixture_module


def plain(depth, act=nn.ReLU, width=16):
    layers = []
    for i in range(depth):
        layers += [nn.Linear(8 if i == 0 else width, width), act()]
    return nn.Sequential(*layers, nn.Linear(width, 3))


def bn005(model):
    return bnlint.check(model, select=["BN005"]).findings


def test_off_by_default_and_enabled_by_select():
    from bnlint.lint import lint_specs

    path = str(FIXTURES / "deep_plain.py")
    assert RULES["BN005"].default is False
    assert lint_specs([path]).findings == []
    findings = lint_specs([path], select=["BN005"]).findings
    mlp = [f for f in findings if f.model.endswith("DeepMLP()")]
    cnn = [f for f in findings if f.model.endswith("PlainCNN()")]
    # the loop builds eight layers on one line: one finding, naming the others
    [loop] = mlp
    assert loop.line == line_of(FIXTURES / "deep_plain.py", "layers += [nn.Linear(")
    assert loop.module == "body.0" and loop.related == ("body.1",) and loop.fix == "unsafe"
    assert "8 layer + activation stages" in loop.message and "and 4 more" in loop.message
    assert [f.module for f in cnn] == [f"conv{i}" for i in range(1, 7)]
    assert all(f.related == ("F.relu",) and f.fix == "unsafe" for f in cnn)


def test_four_stages_is_deep_three_is_not():
    assert len(bn005(plain(4))) == 4
    assert bn005(plain(3)) == []


def test_depth_is_counted_along_one_path_not_across_branches():
    class Wide(nn.Module):
        def __init__(self):
            super().__init__()
            self.branches = nn.ModuleList(nn.Linear(8, 8) for _ in range(5))
            self.head = nn.Linear(40, 2)

        def forward(self, x):
            return self.head(torch.cat([F.relu(b(x)) for b in self.branches], 1))

    assert bn005(Wide()) == []


@pytest.mark.parametrize("variant", [
    "batchnorm", "layernorm", "groupnorm", "functional_layer_norm", "weight_norm", "selu",
    "residual",
])
def test_silent_on_networks_that_are_normalised_or_deep_by_design(variant):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList(nn.Conv2d(8, 8, 3, padding=1) for _ in range(6))
            if variant == "weight_norm":
                for layer in self.layers:
                    weight_norm(layer)
            self.norm = {"batchnorm": nn.BatchNorm2d(8), "layernorm": nn.LayerNorm([8, 4, 4]),
                         "groupnorm": nn.GroupNorm(2, 8)}.get(variant, nn.Identity())

        def forward(self, x):
            for i, layer in enumerate(self.layers):
                h = F.selu(layer(x)) if variant == "selu" else F.relu(layer(x))
                x = h + x if variant == "residual" else h
                if i == 0:
                    x = self.norm(x)
                    if variant == "functional_layer_norm":
                        x = F.layer_norm(x, x.shape[1:])
            return x

    assert bn005(Net()) == []


def test_plain_network_without_the_variants_is_found():
    """The model above, with no normalisation and no skips, is what the rule is for."""
    stage = (nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
    model = nn.Sequential(*[copy.deepcopy(m) for _ in range(6) for m in stage])
    assert len(bn005(model)) == 6


def traced(model):
    """A private traced copy, as the fixer makes: fixes change its modules in place."""
    return trace_model(copy.deepcopy(model)).units[0].gm


def apply_all(gm):
    reasons = [deep_plain.fix(gm, hit) for hit in list(deep_plain.check(gm))]
    gm.graph.lint()
    gm.recompile()
    return reasons


@pytest.mark.parametrize("name, shape", [("DeepMLP", (64,)), ("PlainCNN", (3, 32, 32))])
def test_fix_puts_batchnorm_between_each_layer_and_its_activation(name, shape):
    gm = traced(getattr(fixture_module("deep_plain"), name)())
    pairs = [(h.anchor, next(iter(h.anchor.users))) for h in deep_plain.check(gm)]
    assert apply_all(gm) == [None] * len(pairs)
    for layer, activation in pairs:
        [bn] = layer.users
        assert isinstance(gm.get_submodule(bn.target), nn.modules.batchnorm._BatchNorm)
        assert list(bn.users) == [activation]
        assert gm.get_submodule(layer.target).bias is None
    # the output layer feeds no activation: it keeps its bias and gets no BatchNorm
    head = gm.get_submodule("head" if name == "DeepMLP" else "fc")
    assert head.bias is not None
    # the fixed model trains (train-mode forward and backward) and the rule is now silent
    out = gm.train()(torch.randn(8, *shape))
    out.sum().backward()
    assert out.shape == (8, 10) and list(deep_plain.check(gm)) == []


@pytest.mark.parametrize("layer, bn, shape", [
    ("nn.Conv1d(4, 4, 3, padding=1)", nn.BatchNorm1d, (2, 4, 10)),
    ("nn.Conv3d(4, 4, 3, padding=1)", nn.BatchNorm3d, (2, 4, 5, 5, 5)),
    ("nn.ConvTranspose2d(4, 4, 3, padding=1)", nn.BatchNorm2d, (2, 4, 6, 6)),
])
def test_fix_picks_the_batchnorm_for_the_layer(layer, bn, shape):
    model = nn.Sequential(*[m for _ in range(4) for m in (eval(layer), nn.GELU())])
    gm = traced(model)
    apply_all(gm)
    added = [m for m in gm.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert len(added) == 4 and all(type(m) is bn and m.num_features == 4 for m in added)
    assert gm(torch.randn(*shape)).shape == shape


def test_fix_is_skipped_with_a_reason_for_shared_and_functional_layers():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.shared = nn.Linear(8, 8)
            self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)
            self.w = nn.Parameter(torch.randn(8, 8))

        def forward(self, x):
            x = F.relu(self.shared(x))
            x = F.relu(self.a(x))
            x = F.relu(F.linear(x, self.w))
            x = F.relu(self.shared(x))
            return F.relu(self.b(x))

    gm = traced(Net())
    hits = {h.message.split("`")[1]: h for h in deep_plain.check(gm)}
    assert hits["shared"].fix is None and "more than one place" in hits["shared"].message
    assert hits["F.linear(...)"].fix is None and "functional" in hits["F.linear(...)"].message
    assert hits["a"].fix == "unsafe"
    assert deep_plain.fix(gm, hits["shared"]) == "the layer is called in more than one place"
    assert deep_plain.fix(gm, hits["a"]) is None


@pytest.mark.parametrize("comment, suppressed", [
    ("# bnlint: ignore[BN005]", True),
    ("# noqa: BN005", True),
    ("# noqa: BN001", False),
])
def test_suppression_on_a_layer_line(lint_code, comment, suppressed):
    report = lint_code(f"""
        import torch.nn as nn

        model = nn.Sequential(
            nn.Linear(8, 8), nn.ReLU(),
            nn.Linear(8, 8), nn.ReLU(),
            nn.Linear(8, 8), nn.ReLU(),
            nn.Linear(8, 8), nn.ReLU(),  {comment}
            nn.Linear(8, 2),
        )
    """, select=["BN005"])
    assert [f.line for f in report.findings] == ([5, 6, 7] if suppressed else [5, 6, 7, 8])
