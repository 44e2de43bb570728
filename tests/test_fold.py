"""bnlint.fold: the folded copy computes what the original computes in eval mode, after
training has moved the running statistics, in every layout it folds; it leaves alone what it
cannot fold, with the reason; and it is exact where torch's own fuse is not."""

import copy

import pytest
import torch
from torch import fx, nn
from torch.fx.experimental.optimization import fuse
from torch.nn.modules.batchnorm import _BatchNorm

import bnlint
from bnlint.folding import FoldError
from conftest import import_fresh, run_bnlint
from fixtures_models import fixture_module

pytestmark = pytest.mark.usefixtures("one_thread")
CASES = fixture_module("fold_cases")


def trained(model: nn.Module, steps: int = 4) -> nn.Module:
    """A few SGD steps on random data: weights, biases, BatchNorm affine parameters and
    running statistics all move away from their initial values."""
    torch.manual_seed(0)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for step in range(steps):
        x = torch.randn(6, *model.INPUT_SHAPE) * (1 + step) + step
        loss = model(x).square().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


def inputs(model: nn.Module, batch: int = 5) -> torch.Tensor:
    return torch.randn(batch, *model.INPUT_SHAPE, generator=torch.Generator().manual_seed(1)) * 3


def relative_error(out: torch.Tensor, reference: torch.Tensor) -> float:
    return ((out - reference).abs().max() / reference.abs().max()).item()


def batchnorms(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, _BatchNorm)]


def folded_exactly(name: str, **options) -> tuple[nn.Module, "bnlint.folding.FoldResult"]:
    model = trained(getattr(CASES, name)())
    before = copy.deepcopy(model.state_dict())
    result = bnlint.fold(model, **options)
    x = inputs(model)
    with torch.no_grad():
        assert relative_error(result.model(x), model(x)) < 1e-5
    assert not result.model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    return model, result


@pytest.mark.parametrize("name, pairs", [
    ("GroupedDilated", {("body.0", "body.1"), ("body.3", "body.4")}),
    ("Signal", {("encode.0", "encode.1"), ("decode.0", "decode.1")}),
    ("Decoder", {("up1", "bn1"), ("up2", "bn2")}),
    ("Volume", {("conv", "bn"), ("up", "bn_up")}),
    ("MLPHead", {("head.1", "head.2"), ("head.4", "head.5")}),
])
def test_every_pair_is_folded_in_place_and_the_outputs_stay(name, pairs):
    """Grouped, dilated, strided and transposed convolutions in 1, 2 and 3 dimensions,
    BatchNorm without affine parameters, Linear on (batch, features)."""
    model, result = folded_exactly(name)
    assert {(p.layer, p.batchnorm) for p in result.folded} == pairs and not result.skipped
    assert all(p.into == p.layer for p in result.folded)
    assert type(result.model) is type(model)  # modules swapped: the model keeps its class
    assert batchnorms(result.model) == []
    assert "example input" in result.checked


def test_a_layer_called_again_off_the_batchnorm_path_folds_into_a_copy():
    """``self.bn(self.conv(x)) + self.conv(x)``: fuse folds the conv module itself, so the
    second call loses its plain output; fold gives the BatchNorm's call a folded copy."""
    model, result = folded_exactly("ConvTwice")
    assert [(p.layer, p.batchnorm, p.into) for p in result.folded] == [("conv", "bn", "conv_bn")]
    x = inputs(model)
    with torch.no_grad():
        assert relative_error(fuse(model)(x), model(x)) > 1e-2
    names = dict(result.model.named_modules())
    assert isinstance(names["conv"], nn.Conv2d) and "bn" not in [
        n.target for n in result.model.graph.nodes if n.op == "call_module"]


def test_one_conv_shared_by_two_branches_gets_a_folded_copy_per_batchnorm():
    model, result = folded_exactly("SharedConv")
    assert sorted((p.batchnorm, p.into) for p in result.folded) == [
        ("bn_a", "conv_bn_a"), ("bn_b", "conv_bn_b")]
    x = inputs(model)
    with torch.no_grad():
        assert relative_error(fuse(model)(x), model(x)) > 1e-2


def test_a_linear_on_three_dimensional_values_is_not_a_pair():
    """BatchNorm1d normalises dim 1 of (batch, tokens, features), the tokens; fuse folds it
    into the Linear's features all the same (both are 16)."""
    model = trained(CASES.TokenMLP())
    x = inputs(model)
    with torch.no_grad():
        assert relative_error(fuse(model)(x), model(x)) > 1e-2
    with_shapes = bnlint.fold(model, example=x)
    [skipped] = with_shapes.skipped
    assert (skipped.layer, skipped.batchnorm) == ("mix", "bn")
    assert "normalises dim 1" in skipped.reason and with_shapes.folded == []


def test_a_linear_whose_input_rank_is_unknown_is_not_folded(monkeypatch):
    """No example input, none declared, none probed: a Linear is folded only where the graph
    shows a 2-D input."""
    monkeypatch.delattr(CASES.TokenMLP, "INPUT_SHAPE")
    monkeypatch.setattr("bnlint.folding.resolve", lambda model, example, probing: None)
    model = CASES.TokenMLP()
    [skipped] = bnlint.fold(model).skipped
    assert "cannot tell that the Linear's input is (batch, features)" in skipped.reason
    head = bnlint.fold(trained(CASES.MLPHead()))
    assert len(head.folded) == 2 and "no example input" in head.checked


def test_a_probed_input_does_not_decide_a_linear_pair(monkeypatch):
    """Probing finds that TokenMLP runs on (batch, 16) as well, a guess: shapes it gives are
    dropped, as for findings, so the Linear meant for (batch, tokens, features) stays unfolded."""
    model = trained(CASES.TokenMLP())
    monkeypatch.delattr(CASES.TokenMLP, "INPUT_SHAPE")
    result = bnlint.fold(model)
    [skipped] = result.skipped
    assert "cannot tell that the Linear's input is (batch, features)" in skipped.reason
    assert result.folded == [] and "the model's output on its example input" in result.checked


def test_batchnorm_without_running_statistics_is_left_alone():
    _, result = folded_exactly("BatchStatistics")
    [skipped] = result.skipped
    assert "keeps no running statistics" in skipped.reason and result.folded == []
    assert batchnorms(result.model) == ["bn"]


def test_batchnorm_subclasses_fold_and_keep_their_activation():
    _, result = folded_exactly("NormActBlocks")
    assert {(p.layer, p.batchnorm) for p in result.folded} == {("conv1", "bn1"), ("conv2", "bn2")}
    assert batchnorms(result.model) == []
    kept = {n.target for n in fx.symbolic_trace(result.model.bn1).graph.nodes}
    assert torch.nn.functional.relu in kept  # the activation, where the BatchNorm was
    assert isinstance(result.model.bn2.act, nn.SiLU)


def test_a_subclass_whose_normalisation_cannot_be_told_apart_is_not_folded():
    class Scaled(nn.BatchNorm2d):
        def forward(self, x):
            return super().forward(x) * 2 + x  # uses its input beside the normalisation

    model = nn.Sequential(nn.Conv2d(3, 4, 3), Scaled(4)).eval()
    result = bnlint.fold(model, example=torch.randn(2, 3, 8, 8))
    [skipped] = result.skipped
    assert "cannot tell its normalisation apart" in skipped.reason


@pytest.mark.parametrize("layer, reason", [
    (nn.utils.parametrizations.weight_norm(nn.Conv2d(3, 4, 3)), "weight is computed"),
    (type("Standardised", (nn.Conv2d,), {"forward": lambda self, x: super(type(self), self)
                                         .forward(x)})(3, 4, 3), "defines its own `forward`"),
])
def test_layers_whose_weights_are_not_what_they_compute_with_are_skipped(layer, reason):
    model = nn.Sequential(layer, nn.BatchNorm2d(4)).eval()
    [skipped] = bnlint.fold(model, example=torch.randn(2, 3, 8, 8)).skipped
    assert reason in skipped.reason


def test_a_layer_whose_output_is_also_used_elsewhere_is_not_folded():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y

    [skipped] = bnlint.fold(Net(), example=torch.randn(2, 3, 8, 8)).skipped
    assert "also used without the BatchNorm" in skipped.reason


class Untraceable(nn.Module):
    """A forward fx cannot trace (a loop over the batch) that calls its block's conv
    directly, besides the block: only running the model shows that the conv is not the
    BatchNorm's alone."""

    def __init__(self):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4))
        self.other = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4))

    def forward(self, x):
        rows = [self.block(x[i:i + 1]) + self.block[0](x[i:i + 1]) for i in range(x.shape[0])]
        return torch.cat(rows) + self.other(x)


@pytest.mark.parametrize("tracer, reason", [
    pytest.param("recorded", "also called without this BatchNorm",
                 id="the run-time tracer records the loop and refuses the pair before folding"),
    pytest.param("fx", "changes the model's output on its example input",
                 id="where no tracer sees the call, the check on the example catches it"),
])
def test_what_a_forward_hides_leaves_only_its_pair_unfolded(monkeypatch, tracer, reason):
    """The loop calls the block's conv outside the block: that pair is left as it is (once,
    however many times the loop ran it), the other one folded, and the output kept."""
    from bnlint.trace import trace_model

    if tracer == "fx":
        monkeypatch.setattr("bnlint.folding.trace_model", lambda model, example: trace_model(model))
    torch.manual_seed(0)
    model = Untraceable()
    with torch.no_grad():
        model(torch.randn(8, 3, 8, 8) + 1)  # move the running statistics
    model.eval()
    x = torch.randn(3, 3, 8, 8)
    result = bnlint.fold(model, example=x)
    assert [(p.layer, p.batchnorm) for p in result.folded] == [("other.0", "other.1")]
    [skipped] = result.skipped
    assert (skipped.layer, skipped.batchnorm) == ("block.0", "block.1")
    assert reason in skipped.reason
    with torch.no_grad():
        assert relative_error(result.model(x), model(x)) < 1e-5


def test_without_an_example_a_hidden_forward_leaves_its_pairs_alone(monkeypatch):
    monkeypatch.setattr("bnlint.folding.resolve", lambda model, example, probing: None)
    result = bnlint.fold(Untraceable())
    assert result.folded == [] and len(result.skipped) == 2
    assert all("could not be traced" in s.reason for s in result.skipped)


def test_the_original_keeps_its_modules_mode_and_hooks():
    model = trained(CASES.GroupedDilated()).train()
    modules = dict(model.named_modules())
    bnlint.fold(model)
    assert dict(model.named_modules()) == modules and model.training


def test_a_model_whose_eval_output_is_random_cannot_be_checked_and_is_refused():
    class Noisy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, bias=False)
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x):
            return self.bn(self.conv(x)) + torch.rand(1)

    with pytest.raises(FoldError, match="differs from run to run"):
        bnlint.fold(Noisy(), example=torch.randn(2, 3, 8, 8))


def test_a_folded_layer_that_does_not_match_its_pair_is_not_used(monkeypatch):
    """The check after folding is real: a wrong fold (here, the layer left as it was) is
    caught before it reaches the model."""
    monkeypatch.setattr("bnlint.folding._folded", lambda layer, bn, eps: copy.deepcopy(layer))
    model = trained(CASES.GroupedDilated())
    result = bnlint.fold(model)
    assert result.folded == [] and len(result.skipped) == 2
    assert all("differs from the pair" in s.reason for s in result.skipped)


SAVED_MODEL = '''\
import torch
from torch import nn

INPUT_SHAPE = (3, 10, 10)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2, bias=False)
        self.bn_up = nn.BatchNorm2d(4, track_running_stats=False)

    def forward(self, x):
        return self.bn_up(self.up(torch.relu(self.bn(self.conv(x)))))


def trained():
    torch.manual_seed(0)
    model = Net()
    for step in range(3):
        model(torch.randn(4, 3, 10, 10) + step)
    nn.init.normal_(model.bn.weight)
    return model
'''


def test_save_folded_writes_the_folded_model_as_code_and_weights(tmp_path):
    (tmp_path / "net.py").write_text(SAVED_MODEL, encoding="utf-8")
    result = run_bnlint("net.py:trained()", "--save-folded", "out", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    folder = tmp_path / "out" / "net_trained"
    assert ("net.py:trained(): folded model saved to out/net_trained (1 pair folded; 1 left as "
            "they are: up + bn_up, the BatchNorm keeps no running statistics") in result.output
    saved = import_fresh(folder / "__init__.py").load()
    original = import_fresh(tmp_path / "net.py").trained().eval()
    text = (folder / "__init__.py").read_text()
    assert "class FoldedModel" in text and "Identity" not in text and "'bn'" not in text
    x = torch.randn(2, 3, 10, 10)
    with torch.no_grad():
        assert relative_error(saved(x), original(x)) < 1e-5
    again = run_bnlint("net.py:trained()", "--save-folded", "out", cwd=tmp_path)
    assert "folded model not saved" in again.output and "already exists" in again.output


def test_save_folded_needs_models():
    result = run_bnlint("x.py", "--static", "--save-folded", "out", cwd=".")
    assert result.exit_code == 2 and "--save-folded" in result.output
