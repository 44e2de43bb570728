"""Tracing: models fx cannot follow are still analysed as far as possible, and linting never
changes the model."""

import copy
import subprocess
import sys

import torch
import torch.nn as nn

import bnlint
from bnlint.lint import lint_specs
from bnlint.trace import trace_model
from conftest import FIXTURES, ROOT, line_of


def test_a_probed_input_records_what_fx_cannot_trace():
    """No example input: the model's own loop is opaque to fx, so bnlint probes for an input
    size it takes and records one run: the path that input takes, through the first stage."""
    report = lint_specs([str(FIXTURES / "dynamic.py")])
    [result] = report.models
    assert result.trace == "dynamic" and result.opaque == []
    assert result.example.origin == "found by probing"
    found = {(f.code, f.module) for f in report.findings}
    assert {("BN001", "stages.0.gate.conv"), ("BN002", "stages.0.bn")} <= found


def test_data_dependent_model_is_analysed_around_what_cannot_be_traced(monkeypatch):
    monkeypatch.setattr("bnlint.engine.probe", lambda model: None)  # fx alone
    report = lint_specs([str(FIXTURES / "dynamic.py")])
    [result] = report.models
    assert result.status == "ok" and result.trace == "partial"
    # the model's own loop over a shape-dependent count is the only opaque part
    assert result.opaque == [""]
    assert "Proxy" in result.reason
    found = {(f.code, f.module) for f in report.findings}
    # inside the data-dependent `if` of GatedBlock (both branches traced) ...
    assert ("BN001", "stages.0.gate.conv") in found
    # ... and inside Stage, traced with GatedBlock kept as an opaque leaf
    assert ("BN002", "stages.0.bn") in found
    bn001 = next(f for f in report.findings if f.code == "BN001")
    assert bn001.line == line_of(FIXTURES / "dynamic.py", "self.conv = nn.Conv2d(channels")


def test_branching_block_is_traced_on_both_paths():
    class Either(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 8, 3)
            self.bn_a = nn.BatchNorm2d(8)
            self.b = nn.Conv2d(3, 8, 3)
            self.bn_b = nn.BatchNorm2d(8)

        def forward(self, x):
            if x.mean() > 0:
                return self.bn_a(self.a(x))
            return self.bn_b(self.b(x))

    traced = trace_model(Either())
    assert traced.mode == "branches" and traced.branched == [""]
    assert {f.module for f in bnlint.check(Either()).findings} == {"a", "b"}


def test_fully_traceable_model():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU())
    traced = trace_model(model)
    assert traced.mode == "full" and traced.opaque == {}
    assert bnlint.check(model).models[0].trace == "full"


def test_untraceable_model_with_only_plain_layers_reports_itself_opaque(monkeypatch):
    class Weird(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3)
            self.bn = nn.BatchNorm2d(8)

        def forward(self, x):
            for _ in range(int(x.shape[0])):
                x = x * 1
            return self.bn(self.conv(x))

    monkeypatch.setattr("bnlint.engine.probe", lambda model: None)  # no input: fx alone
    report = bnlint.check(Weird())
    assert report.models[0].trace == "partial" and report.models[0].opaque == [""]
    assert report.findings == []


def test_linting_never_changes_the_model():
    from fixtures_models import trained_vgg

    model = trained_vgg()
    for mode in (True, False):
        model.train(mode)
        state = copy.deepcopy(model.state_dict())
        modes = [m.training for m in model.modules()]
        bnlint.check(model)
        after = model.state_dict()
        assert all(torch.equal(state[k], after[k]) for k in state)
        assert [m.training for m in model.modules()] == modes


def test_functional_call_in_a_helper_is_placed_at_the_helper_line(lint_code):
    report = lint_code("""
        import torch
        import torch.nn as nn
        import torch.nn.functional as F

        def project(x, w, b):
            return F.conv2d(x, w, b, padding=1)

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.w = nn.Parameter(torch.randn(8, 3, 3, 3))
                self.b = nn.Parameter(torch.zeros(8))
                self.bn = nn.BatchNorm2d(8)

            def forward(self, x):
                return self.bn(project(x, self.w, self.b))
    """)
    [finding] = report.findings
    assert (finding.code, finding.line, finding.col) == ("BN001", 7, 14)


def test_tracing_does_not_load_the_compiler_stack():
    """fx's own stack recording imports torch._dynamo and more: seconds on every run."""
    code = ("import sys, torch.nn as nn, bnlint; "
            "bnlint.check(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))); "
            "print('torch._dynamo' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "False"


def test_a_forward_using_a_tensor_constant_is_traced_in_full():
    """fx keeps a tensor that is no attribute of the module (here one from the enclosing
    scope) as a constant stored on the module while it traces; the graph must keep it, and
    the user's module must not."""
    scale = torch.ones(1)

    class WithConstant(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3)
            self.bn = nn.BatchNorm2d(8)

        def forward(self, x):
            return self.bn(self.conv(x)) * scale

    model = WithConstant()
    report = bnlint.check(model)
    assert report.models[0].trace == "full" and report.models[0].opaque == []
    assert [f.code for f in report.findings] == ["BN001"]
    assert not any(name.startswith("_tensor_constant") for name in vars(model))

