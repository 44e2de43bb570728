"""The run-time tracer: what torch.fx cannot follow is recorded by running the model on an
example input, so mistakes behind shape asserts, index arithmetic and custom batch objects are
found at the right line, clean twins stay silent, and the caller's model never changes."""

import copy
import importlib.util
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.modules import module as module_hooks

import bnlint
from bnlint import dyntrace, graph, workers
from bnlint.engine import analyse
from bnlint.inputs import Example
from bnlint.rules import enabled_codes
from bnlint.source import recording
from bnlint.trace import trace_model
from conftest import FIXTURES, assert_same_function, line_of


def built(name: str, cls: str, **kwargs):
    """A fixture model built as the command line builds it (construction sites recorded), and
    its file's example input."""
    with recording():
        spec = importlib.util.spec_from_file_location(f"dyn_{name}", FIXTURES / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        model = getattr(module, cls)(**kwargs)
    torch.manual_seed(0)
    return model, Example((module.example_input(),), {}, "from example_input()")


def findings(model, example=None, codes=None):
    """Unmerged findings (one per offending layer) and the model's result."""
    return analyse(model, type(model).__name__, codes or enabled_codes(None, None), example)


def snapshot(model):
    return (copy.deepcopy(model.state_dict()), [m.training for m in model.modules()],
            [(dict(m._forward_hooks), dict(m._forward_pre_hooks)) for m in model.modules()],
            dict(module_hooks._global_forward_hooks),
            dict(module_hooks._global_forward_pre_hooks), torch.get_rng_state())


def assert_unchanged(model, before):
    state, modes, hooks, global_hooks, global_pre_hooks, rng = before
    after = model.state_dict()
    assert set(after) == set(state)
    assert all(torch.equal(state[k], after[k]) for k in state)
    assert [m.training for m in model.modules()] == modes
    assert [(dict(m._forward_hooks), dict(m._forward_pre_hooks))
            for m in model.modules()] == hooks
    assert dict(module_hooks._global_forward_hooks) == global_hooks
    assert dict(module_hooks._global_forward_pre_hooks) == global_pre_hooks
    assert torch.equal(torch.get_rng_state(), rng)


def residual_convs(model):
    return {f"{name}.{conv}.conv" for name, m in model.named_modules()
            if type(m).__name__ == "Residual" for conv in ("conv1", "conv2")}


CASES = {
    # a shape assert in a wrapper's forward; mistakes inside the wrapper and across it
    "see_through_assert": ("StackedHourglass", "self.conv = nn.Conv2d(",
                           lambda m: residual_convs(m) | {"pre.0.conv"}),
    # sampling and grouping code, run on real tensors: masks and argmax need values
    "see_through_sampling": ("PointNet2", None, lambda m: {
        "sa1.convs.0", "sa1.convs.1", "sa1.convs.2", "sa2.convs.0", "sa2.convs.1", "fc1"}),
    # a custom batch object; a sub-MLP's last Linear feeds the parent's BatchNorm1d
    "see_through_batch": ("GIN", "layers.append(nn.Linear(dims[-2]",
                          lambda m: {f"layers.{i}.mlp.net.3" for i in range(3)}),
}
LINES = {"sa1": "self.convs.append(nn.Conv1d(", "sa2": "self.convs.append(nn.Conv1d(",
         "fc1": "self.fc1 = nn.Linear("}


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_mistake_fx_cannot_see_is_found_at_its_line(name, monkeypatch):
    cls, needle, expected = CASES[name]
    model, example = built(name, cls)
    before = snapshot(model)
    with monkeypatch.context() as patch:
        patch.setattr("bnlint.engine.probe", lambda model: None)  # fx alone
        unseen, result = findings(model)
    assert result.trace == "partial"
    found, result = findings(model, example)
    assert result.trace == "dynamic" and result.opaque == [] and result.reason is None
    assert "dynamic" in result.traced_by
    assert {f.module for f in found if f.code == "BN001"} == expected(model)
    assert len(found) > len(unseen)
    for f in found:
        assert f.code == "BN001" and f.path == f"fixtures/{name}.py"
        assert f.line == line_of(FIXTURES / f"{name}.py", needle or LINES[f.module.split(".")[0]])
    for mode in (True, False):
        model.train(mode)
        before = snapshot(model)
        findings(model, example)
        assert_unchanged(model, before)


def test_without_an_example_a_probed_input_lets_bnlint_see_through():
    """No example_input() or INPUT_SHAPE: fx leaves the wrappers opaque, so bnlint probes
    for an image size the model takes and records the run."""
    model, _ = built("see_through_assert", "StackedHourglass")
    found, result = findings(model)
    assert result.trace == "dynamic" and result.example.origin == "found by probing"
    assert {f.module for f in found if f.code == "BN001"} == CASES["see_through_assert"][2](model)


def test_a_model_no_probed_shape_fits_stays_partial_and_says_how_to_give_an_input():
    model, _ = built("see_through_batch", "GIN")
    _, result = findings(model)
    assert result.trace == "partial" and "--example" in result.reason


@pytest.mark.parametrize("name", sorted(CASES))
def test_clean_twins_stay_silent(name):
    model, example = built(name, CASES[name][0], bias=False)
    found, result = findings(model, example, enabled_codes(["ALL"], None))
    assert found == []
    assert result.trace == "dynamic" and result.opaque == []


def test_sampling_code_falls_back_to_real_tensors_and_the_rest_runs_on_fake_ones():
    pointnet, example = built("see_through_sampling", "PointNet2")
    session = dyntrace._Session(pointnet, example, set(), set())
    assert session.model_run().kind == "real"
    gin, example = built("see_through_batch", "GIN")
    session = dyntrace._Session(gin, example, set(), set())
    assert session.model_run().kind == "fake"


def test_traced_by_names_what_each_method_saw():
    model, example = built("see_through_batch", "GIN")
    _, result = findings(model, example)
    assert result.traced_by == {"fx": ["layers.0.mlp", "layers.1.mlp", "layers.2.mlp"],
                                "dynamic": ["", "layers.0", "layers.1", "layers.2"]}
    assert result.to_dict()["traced_by"] == result.traced_by


class Parts(nn.Module):
    """Sums a shared layer over a list of tensors: fx cannot loop over an argument."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 8)
        self.bn = nn.BatchNorm1d(8)

    def forward(self, parts, scale=1.0):
        return self.bn(sum(self.fc(x) for x in parts)) * scale


def test_a_list_argument_and_keyword_arguments():
    model = Parts()
    assert bnlint.check(model).findings == []
    example = Example(([torch.randn(3, 4), torch.randn(3, 4)],), {"scale": 2.0})
    report = bnlint.check(model, example=example)
    [finding] = report.findings
    assert (finding.code, finding.module, finding.fix) == ("BN001", "fc", "safe")
    [unit] = trace_model(model, example).units
    placeholders = [n.target for n in unit.gm.graph.nodes if n.op == "placeholder"]
    assert placeholders == ["parts_0", "parts_1"]


class Checked(nn.Module):
    def __init__(self, channels=8):
        super().__init__()
        self.channels = channels
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x):
        assert x.shape[1] == self.channels
        return self.bn(self.conv(x))


class Gated(nn.Module):
    """Branches on data (fx traces both ways) around an opaque block."""

    def __init__(self):
        super().__init__()
        self.inner = Checked()

    def forward(self, x):
        if x.mean() > 100:
            return x
        return self.inner(x)


class Outer(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1, bias=False)
        self.gated = Gated()

    def forward(self, x):
        return self.gated(self.stem(x))


def test_opaque_forward_inside_a_branching_one_is_recorded_on_its_own():
    model = Outer()
    example = Example((torch.randn(2, 3, 6, 6),))
    traced = trace_model(model, example)
    assert traced.branched == ["gated"]
    assert traced.traced_by == {"fx": [""], "branches": ["gated"], "dynamic": ["gated.inner"]}
    dynamic = [u for u in traced.units if u.dynamic]
    assert [u.prefix for u in dynamic] == ["gated.inner"]
    assert traced.opaque == {} and traced.mode == "dynamic"
    report = bnlint.check(model, example=example)
    assert {f.module for f in report.findings} == {"gated.inner.conv"}


class Scaled(nn.Module):
    """Runs as many blocks as the input is wide, in fours: fx cannot count them."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([Checked(3), Checked(3)])

    def forward(self, x):
        for block in self.blocks[: x.shape[-1] // 4]:
            x = block(x)
        return x


def test_an_opaque_forward_the_example_never_reaches_stays_opaque():
    report = bnlint.check(Scaled(), example=Example((torch.randn(2, 3, 4, 4),)))
    [result] = report.models
    assert result.trace == "partial" and result.opaque == ["blocks.1"]
    assert "blocks.1: " in result.reason and "(the run on the example never called it)" in result.reason
    assert result.traced_by == {"dynamic": ["", "blocks.0"]}
    assert {f.module for f in report.findings} == {"blocks.0.conv"}
    wider = bnlint.check(Scaled(), example=Example((torch.randn(2, 3, 8, 8),)))
    assert wider.models[0].trace == "dynamic"
    assert len(wider.findings) == 1 and "blocks.1.conv" in wider.findings[0].message


def test_without_an_example_the_reason_says_which_forward_needs_one(monkeypatch):
    monkeypatch.setattr("bnlint.engine.probe", lambda model: None)  # no shape tried fits
    _, result = findings(Outer())
    assert "`Outer.forward(x)`" in result.reason
    assert "--example 'file.py:EXPR'" in result.reason and "example_input()" in result.reason
    assert "--input-shape" in result.reason


def test_an_example_that_does_not_fit_is_reported_and_fx_findings_stand():
    model, _ = built("see_through_sampling", "PointNet2")
    found, result = findings(model, Example((torch.randn(2, 5),), {}, "from --example"))
    assert result.trace == "partial"
    assert "Running `PointNet2.forward` on the example (from --example) failed:" in result.reason
    assert {f.module for f in found} == {"fc1"}
    traceable = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8))
    found, result = findings(traceable, Example((torch.randn(2, 5),), {}, "from --example"))
    assert result.trace == "full" and [f.module for f in found] == ["0"]
    assert result.reason.startswith("Running `Sequential.forward` on the example (from --example) "
                                    "failed: RuntimeError: mat1 and mat2 shapes cannot be")


class WithConstant(nn.Module):
    """A plain tensor attribute (not a buffer) used in an opaque forward: fake tensors take it
    in, the meta device refuses to mix it with its own."""

    def __init__(self):
        super().__init__()
        self.scale = torch.ones(8)
        self.conv = nn.Conv2d(3, 8, 1)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x):
        assert x.shape[1] == 3
        return self.bn(self.conv(x) * self.scale[:, None, None])


def test_without_fake_tensors_meta_ones_stand_in_and_real_ones_take_what_they_cannot(
        monkeypatch):
    example = Example((torch.randn(2, 3, 4, 4),))
    session = dyntrace._Session(WithConstant(), example, set(), set())
    assert session.model_run().kind == "fake"
    monkeypatch.setattr(dyntrace, "FAKE_SINCE", (99, 0))  # a torch bnlint has no FakeTensor for
    assert dyntrace._Session(Checked(3), example, set(), set()).model_run().kind == "meta"
    model = WithConstant()
    before = snapshot(model)
    session = dyntrace._Session(model, example, set(), set())
    assert session.model_run().kind == "real"
    assert_unchanged(model, before)
    # the constant is an input of the graph, not a hole in it
    [unit] = trace_model(model, example).units
    assert any(n.op == "placeholder" and n.target.startswith("_tensor_constant")
               for n in unit.gm.graph.nodes)


def test_every_value_gets_its_shape():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8 * 4 * 4, 5))
    example = Example((torch.randn(2, 3, 6, 6),))
    [unit] = trace_model(model, example).units
    assert not unit.dynamic
    shapes = {n.target: graph.shape_of(n) for n in unit.gm.graph.nodes if n.op == "call_module"}
    assert shapes == {"0": (2, 8, 4, 4), "1": (2, 8, 4, 4), "2": (2, 8, 4, 4), "3": (2, 128),
                      "4": (2, 5)}
    model, example = built("see_through_batch", "GIN")
    [unit] = [u for u in trace_model(model, example).units if u.dynamic]
    values = [n for n in unit.gm.graph.nodes if n.op not in ("output", "get_attr")]
    assert all(n.meta.get("tensor_meta") is not None for n in values)
    assert graph.shape_of(next(n for n in values if n.target == "layers.0.bn")) == (10, 16)


def test_functional_calls_get_the_line_that_made_them():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(8, 3, 1, 1))
            self.b = nn.Parameter(torch.zeros(8))
            self.bn = nn.BatchNorm2d(8)

        def forward(self, x):
            assert x.shape[1] == 3
            y = F.conv2d(x, self.w, self.b)  # the call BN001 points at
            return self.bn(y)

    report = bnlint.check(Functional(), example=Example((torch.randn(2, 3, 4, 4),)))
    [finding] = report.findings
    assert finding.code == "BN001" and finding.line == line_of(__file__, "# the call BN001")


def train_gin(model, example, steps=3):
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    for step in range(steps):
        torch.manual_seed(step)
        loss = model(example.args[0]).square().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()


def test_a_state_only_fix_applies_in_a_recorded_forward_and_stays_exact():
    model, example = built("see_through_batch", "GIN")
    train_gin(model, example)
    result = bnlint.fix(model, example=example)
    assert {e.module for e in result.applied} == {f"layers.{i}.mlp.net.3" for i in range(3)}
    assert result.skipped == []
    fixed = result.model
    assert all(fixed.get_submodule(f"layers.{i}.mlp.net.3").bias is None for i in range(3))
    batch = example.args[0]
    for mode in (True, False):
        model.train(mode)
        fixed.train(mode)
        torch.testing.assert_close(fixed(batch), model(batch), rtol=1e-4, atol=1e-5)


def test_a_rewrite_is_skipped_in_a_recorded_forward():
    spec = importlib.util.spec_from_file_location("dyn_dynamic", FIXTURES / "dynamic.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.DynamicNet()
    example = Example((torch.randn(2, 3, 32, 32),))  # wide enough to run both stages
    result = bnlint.fix(model, unsafe=True, example=example)
    skipped = {e.module: e.reason for e in result.skipped}
    assert "one path through its Python" in skipped["stages.0.bn"]
    # the fold inside the branching block (fx traced it both ways) still applies
    assert {e.module for e in result.applied} == {"stages.0.gate.conv", "stages.1.gate.conv"}
    assert_same_function(model, result.model, (2, 3, 32, 32))


# --- fx and the run-time tracer agree wherever both can run -----------------------------------

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "relu_f": None}


@dataclass(frozen=True)
class Stage:
    width: int
    bias: bool
    norm: str  # "none", "before" (layer -> BN -> activation) or "after" (activation -> BN)
    activation: str
    pool: bool  # max pooling between the layer and the rest
    skip: bool  # a residual sum around the stage, where the width allows it


stages = st.builds(Stage, width=st.integers(2, 5), bias=st.booleans(),
                   norm=st.sampled_from(["none", "before", "after"]),
                   activation=st.sampled_from(sorted(ACTIVATIONS)), pool=st.booleans(),
                   skip=st.booleans())


class Generated(nn.Module):
    """Conv stages on 4x4 images, a flatten or a mean, then Linear stages."""

    def __init__(self, convs: list[Stage], linears: list[Stage], flatten: bool):
        super().__init__()
        self.convs, self.linears = convs, linears
        self.flatten = flatten
        self.layers = nn.ModuleList()
        self.skips = []
        channels = 3
        for stage in convs:
            self.layers.append(self._stage(nn.Conv2d(channels, stage.width, 3, padding=1,
                                                     bias=stage.bias), nn.BatchNorm2d, stage))
            self.skips.append(stage.skip and channels == stage.width)
            channels = stage.width
        features = channels * 16 if flatten else channels
        for stage in linears:
            self.layers.append(self._stage(nn.Linear(features, stage.width, bias=stage.bias),
                                           nn.BatchNorm1d, stage))
            self.skips.append(stage.skip and features == stage.width)
            features = stage.width

    @staticmethod
    def _stage(layer, norm, stage):
        activation = ACTIVATIONS[stage.activation]
        return nn.ModuleDict({"layer": layer, "norm": norm(layer.weight.shape[0]),
                              "act": activation() if activation else nn.Identity()})

    def _run(self, stage, parts, skip, x, image):
        y = parts["layer"](x)
        if stage.pool and image:
            y = F.max_pool2d(y, 3, stride=1, padding=1)
        act = parts["act"] if ACTIVATIONS[stage.activation] else F.relu
        if stage.norm == "before":
            y = act(parts["norm"](y))
        elif stage.norm == "after":
            y = parts["norm"](act(y))
        else:
            y = act(y)
        return x + y if skip else y

    def forward(self, x):
        stages = [*self.convs, *self.linears]
        for i, (stage, parts, skip) in enumerate(zip(stages, self.layers, self.skips)):
            if i == len(self.convs):
                x = torch.flatten(x, 1) if self.flatten else x.mean((2, 3))
            x = self._run(stage, parts, skip, x, i < len(self.convs))
        return x if len(self.linears) else x.flatten(1)


def _no_fx(*args, **kwargs):
    raise torch.fx.proxy.TraceError("fx switched off: the run-time tracer sees everything")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(convs=st.lists(stages, max_size=3), linears=st.lists(stages, max_size=3),
       flatten=st.booleans())
def test_fx_and_the_run_time_tracer_find_the_same(convs, linears, flatten):
    model = Generated(convs, linears, flatten)
    example = Example((torch.randn(3, 3, 4, 4),))
    by_fx = bnlint.check(model, select=["ALL"], example=example)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("bnlint.trace.trace_one", _no_fx)
        recorded = bnlint.check(model, select=["ALL"], example=example)
    assert by_fx.models[0].trace == "full"
    assert recorded.models[0].trace == "dynamic"
    assert [f.to_dict() for f in recorded.findings] == [f.to_dict() for f in by_fx.findings]


class Stateful(nn.Module):
    """Stores things on itself while it runs, as real forwards do."""

    def __init__(self):
        super().__init__()
        self.calls = 0
        self.conv = nn.utils.spectral_norm(nn.Conv2d(3, 8, 1))
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x):
        assert x.shape[1] == 3
        self.calls += 1
        self.last = x
        self.register_buffer("seen", torch.ones(1))
        return self.bn(self.conv(x))


def test_what_a_forward_stores_on_its_modules_is_undone():
    model = Stateful()
    model(torch.randn(2, 3, 4, 4))
    model.train()
    example = Example((torch.randn(2, 3, 4, 4),))
    before = snapshot(model)
    attributes = [dict(vars(m)) for m in model.modules()]
    report = bnlint.check(model, example=example)
    assert report.models[0].trace == "dynamic"
    assert [f.module for f in report.findings] == ["conv"]
    assert_unchanged(model, before)
    assert [dict(vars(m)) for m in model.modules()] == attributes
    assert model.calls == 1 and not model.conv.weight.is_meta


class NeedsValues(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 8)
        self.bn = nn.BatchNorm1d(8)

    def forward(self, x):
        assert x.shape[1] == 4
        scale = x.abs().max().item()  # a value: neither meta nor fake tensors have one
        return self.bn(self.fc(x / scale))


def test_a_model_built_without_weights_runs_on_stand_in_values_where_it_must():
    with torch.device("meta"):
        model = NeedsValues()
    example = Example((torch.randn(3, 4),))
    session = dyntrace._Session(model, example, set(), set())
    assert session.model_run().kind == "real"
    report = bnlint.check(model, example=example)
    assert report.models[0].trace == "dynamic"
    assert [f.module for f in report.findings] == ["fc"]
    assert all(t.is_meta for t in model.state_dict().values())


class WideNeedsValues(nn.Module):
    """Half a gigabyte of weights, and a forward only real tensors can run."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 16384)
        self.fc2 = nn.Linear(16384, 8192)
        self.bn = nn.BatchNorm1d(8192)

    def forward(self, x):
        assert x.shape[1] == 4
        scale = x.abs().max().item()
        return self.bn(self.fc2(self.fc1(x / scale)))


def test_a_run_on_real_tensors_holds_no_weights_of_a_model_built_without_them():
    with torch.device("meta"):
        model = WideNeedsValues()
    state = dyntrace._Runner("real").state(model)
    # large tensors are zeros in memory of their own; small ones take random values
    assert not state["fc2.weight"].any() and not state["fc1.weight"].any()
    assert state["fc2.weight"].shape == (8192, 16384)
    starts = sorted((t.data_ptr(), t.data_ptr() + t.numel() * t.element_size())
                    for name, t in state.items() if name.endswith("weight") and "fc" in name)
    assert starts[0][1] <= starts[1][0]
    assert state["fc2.bias"].any()
    del state
    workers.reset_peak()
    before = workers.peak()
    report = bnlint.check(model, example=Example((torch.randn(3, 4),)))
    assert report.models[0].trace == "dynamic"
    assert [f.module for f in report.findings] == ["fc2"]
    if before is not None:  # Linux: the weights alone would be 512 MiB
        assert workers.peak() - before < 200 * 2**20
