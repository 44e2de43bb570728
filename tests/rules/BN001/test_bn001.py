"""BN001: a biased conv/linear layer feeding BatchNorm."""

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import bnlint
from bnlint.rules import bias_before_bn
from conftest import FIXTURES, assert_same_function, line_of, shaped_graph, train
from fixtures_models import fixture_module

pytestmark = pytest.mark.usefixtures("one_thread")


def codes(report):
    return [f.code for f in report.findings]


def test_finds_biased_convs_in_vgg_fixture_at_the_constructing_line():
    from bnlint.lint import lint_specs

    report = lint_specs([str(FIXTURES / "vgg.py")])
    [finding] = report.findings
    assert finding.code == "BN001"
    assert finding.path == "fixtures/vgg.py"
    assert finding.line == line_of(FIXTURES / "vgg.py", "nn.Conv2d(in_channels, x")
    assert finding.module == "features.0"
    assert finding.related == ("features.1",)
    assert finding.fix == "safe"
    # the helper line builds all eight convs of both VGG11s: one finding, naming the others
    assert "features.4" in finding.message and "12 more, in 2 models" in finding.message
    assert finding.instances[0] == (finding.model, "features.0", ("features.1",))
    assert len(finding.instances) == 16


def test_clean_models_stay_silent():
    from bnlint.lint import lint_specs

    report = lint_specs([str(FIXTURES / "clean.py")], select=["BN001"])
    assert report.findings == []
    assert {m.status for m in report.models} <= {"ok", "skipped"}


@pytest.mark.parametrize("layer, bn, shape", [
    ("nn.Conv1d(4, 8, 3)", "nn.BatchNorm1d(8)", None),
    ("nn.Conv3d(4, 8, 3)", "nn.BatchNorm3d(8)", None),
    ("nn.ConvTranspose2d(4, 8, 3)", "nn.BatchNorm2d(8)", None),
    ("nn.Linear(4, 8)", "nn.BatchNorm1d(8)", None),
    ("nn.LazyConv2d(8, 3)", "nn.LazyBatchNorm2d()", None),
    ("nn.Conv2d(4, 8, 3)", "nn.BatchNorm2d(8, affine=False)", None),
    ("nn.Conv2d(4, 8, 3)", "nn.SyncBatchNorm(8)", None),
    ("nn.Conv2d(4, 8, 3)", "nn.BatchNorm2d(8, track_running_stats=False)", None),
])
def test_every_biased_layer_and_batchnorm_kind(lint_code, layer, bn, shape):
    report = lint_code(f"""
        import torch.nn as nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.layer = {layer}
                self.bn = {bn}

            def forward(self, x):
                return self.bn(self.layer(x))
    """)
    assert codes(report) == ["BN001"]
    assert report.findings[0].line == 7
    assert report.findings[0].module == "layer"


def test_third_party_batchnorm_subclass_with_activation_counts_as_batchnorm():
    class BatchNormAct2d(nn.BatchNorm2d):
        def forward(self, x):
            return F.relu(super().forward(x))

    model = nn.Sequential(nn.Conv2d(3, 8, 3), BatchNormAct2d(8), nn.Conv2d(8, 8, 3, bias=False),
                          BatchNormAct2d(8))
    report = bnlint.check(model)
    assert [(f.code, f.module) for f in report.findings] == [("BN001", "0")]


def test_functional_forms_with_and_without_bias(lint_code):
    report = lint_code("""
        import torch
        import torch.nn as nn
        import torch.nn.functional as F

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.w = nn.Parameter(torch.randn(8, 3, 3, 3))
                self.b = nn.Parameter(torch.zeros(8))
                self.bn = nn.BatchNorm2d(8)
                self.bn2 = nn.BatchNorm2d(8)

            def forward(self, x):
                y = self.bn(F.conv2d(x, self.w, self.b, padding=1))
                z = self.bn2(F.conv2d(x, self.w, None, padding=1))
                return y + z
    """)
    [finding] = report.findings
    assert finding.code == "BN001"
    assert finding.line == 15 and finding.module is None
    assert finding.fix is None  # a functional call has no constructor argument to change


@pytest.mark.parametrize("between, fires", [
    ("nn.MaxPool2d(2)", True),
    ("nn.AdaptiveAvgPool2d(4)", True),
    ("nn.AvgPool2d(2)", True),
    ("nn.AvgPool2d(3, padding=1)", False),  # zero padding mixes in a non-shifted 0
    ("nn.Dropout(0.5)", False),  # the random mask scales the bias
    ("nn.Identity()", True),
])
def test_looks_through_ops_that_keep_a_per_channel_shift(between, fires):
    model = nn.Sequential(nn.Conv2d(3, 8, 3), eval(between), nn.BatchNorm2d(8))
    assert (codes(bnlint.check(model)) == ["BN001"]) is fires


def test_looks_through_flatten_into_batchnorm1d():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.BatchNorm1d(4 * 6 * 6))
    assert codes(bnlint.check(model)) == ["BN001"]


def test_looks_through_residual_add():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(8, 8, 3, padding=1)
            self.bn = nn.BatchNorm2d(8)

        def forward(self, x):
            return self.bn(self.conv(x) + x)

    [finding] = bnlint.check(Block()).findings
    assert finding.code == "BN001" and finding.related == ("+", "bn")


def test_silent_when_the_biased_output_also_feeds_something_else():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3)
            self.bn = nn.BatchNorm2d(8)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y), y.mean()  # the bias matters for the second output

    assert bnlint.check(Net()).findings == []


def test_shared_layer_is_reported_but_not_fixable_when_one_call_skips_batchnorm():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(8, 8, 3, padding=1)
            self.bn = nn.BatchNorm2d(8)

        def forward(self, x):
            return self.bn(self.conv(x)) + torch.tanh(self.conv(x))

    [finding] = bnlint.check(Net()).findings
    assert finding.fix is None and "also called" in finding.message


def test_linear_with_bias_and_no_batchnorm_is_fine():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    assert bnlint.check(model).findings == []


@pytest.mark.parametrize("comment, suppressed", [
    ("# bnlint: ignore[BN001]", True),
    ("# bnlint: ignore", True),
    ("# noqa: BN001", True),
    ("# noqa", True),
    ("# noqa: E501", False),
    ("# bnlint: ignore[BN002]", False),
])
def test_inline_suppression_on_the_constructing_line(lint_code, comment, suppressed):
    report = lint_code(f"""
        import torch.nn as nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(3, 8, 3)  {comment}
                self.bn = nn.BatchNorm2d(8)

            def forward(self, x):
                return self.bn(self.conv(x))
    """)
    assert (report.findings == []) is suppressed


def test_suppression_on_the_last_line_of_a_multiline_call(lint_code):
    report = lint_code("""
        import torch.nn as nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(
                    3, 8, 3,
                )  # noqa: BN001
                self.bn = nn.BatchNorm2d(8)

            def forward(self, x):
                return self.bn(self.conv(x))
    """)
    assert report.findings == []


def test_select_and_ignore():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.BatchNorm2d(8),
                          nn.Conv2d(8, 8, 3), nn.BatchNorm2d(8))
    assert sorted(codes(bnlint.check(model))) == ["BN001", "BN002"]
    assert codes(bnlint.check(model, select=["BN001"])) == ["BN001"]
    assert codes(bnlint.check(model, ignore=["BN001"])) == ["BN002"]
    assert codes(bnlint.check(model, select=["BN"], ignore=["BN002"])) == ["BN001"]


# --- what the bias lies along ------------------------------------------------------------------


class TabularMLP(nn.Module):
    """Linear on (batch, features) into BatchNorm1d over those features: the textbook BN001."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 8)
        self.bn = nn.BatchNorm1d(8)
        self.out = nn.Linear(8, 3)

    def forward(self, x):
        return self.out(torch.relu(self.bn(self.fc(x))))


def test_linear_on_batch_features_is_fixed_exactly_once_shapes_are_known():
    model = TabularMLP()
    train(model, (16, 6), steps=3)
    fixed = copy.deepcopy(model)
    gm = shaped_graph(fixed, torch.randn(4, 6))
    [hit] = bias_before_bn.check(gm)
    assert hit.fix == "safe" and "dead weight. Use bias=False." in hit.message
    assert bias_before_bn.fix(gm, hit) is None
    assert fixed.fc.bias is None
    assert_same_function(model, fixed, (16, 6))
    train(model, (16, 6), steps=2, seed=7)
    train(fixed, (16, 6), steps=2, seed=7)
    assert_same_function(model, fixed, (16, 6))


def test_linear_of_unknown_input_rank_is_reported_without_a_fix():
    model = TabularMLP()
    [finding] = bnlint.check(model).findings
    assert finding.code == "BN001" and finding.fix is None
    assert ("if its input is (batch, features), BatchNorm subtracts each feature's mean and the"
            " bias is dead weight" in finding.message)
    assert "(batch, length, features), where BatchNorm1d normalises dim 1" in finding.message
    assert "with an example input it records the shapes" in finding.message
    result = bnlint.fix(model)
    assert result.applied == [] and "cannot tell" in result.skipped[0].reason
    assert model.fc.bias is not None


class ConvThenLinear(nn.Module):
    def __init__(self, to_vectors, features):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=False)
        self.bn0 = nn.BatchNorm2d(4)
        self.to_vectors = to_vectors
        self.fc = nn.Linear(features, 8)
        self.bn = nn.BatchNorm1d(8)

    def forward(self, x):
        x = self.to_vectors(torch.relu(self.bn0(self.conv(x))))
        return self.bn(self.fc(x))


@pytest.mark.parametrize("to_vectors, features", [
    (lambda x: x.flatten(1), 64),
    (lambda x: torch.flatten(x, 1), 64),
    (lambda x: x.view(x.size(0), -1), 64),
    (lambda x: x.reshape(x.shape[0], -1), 64),
    (lambda x: x.mean((2, 3)), 4),
    (lambda x: torch.amax(x, dim=(2, 3)), 4),
], ids=["flatten", "torch.flatten", "view", "reshape", "mean", "amax"])
def test_linear_input_rank_read_from_the_op_before_it(to_vectors, features):
    model = ConvThenLinear(to_vectors, features)
    train(model, (8, 3, 6, 6), steps=2)
    [finding] = bnlint.check(model).findings
    assert (finding.code, finding.module, finding.fix) == ("BN001", "fc", "safe")
    result = bnlint.fix(model)
    assert [e.module for e in result.applied] == ["fc"]
    assert_same_function(model, result.model, (8, 3, 6, 6))


class SequenceLinear(nn.Module):
    """Linear on (batch, length, features) into BatchNorm1d(length): BatchNorm normalises each
    position, and the Linear's per-feature bias varies inside every position's values."""

    def __init__(self, length, features):
        super().__init__()
        self.fc = nn.Linear(3, features)
        self.bn = nn.BatchNorm1d(length)

    def forward(self, x):
        return self.bn(self.fc(x))


@pytest.mark.parametrize("length, features", [(5, 5), (7, 5)])
def test_linear_on_a_sequence_into_batchnorm_over_positions_is_not_bn001(length, features):
    model = SequenceLinear(length, features)
    train(model, (8, length, 3), steps=2)
    assert list(bias_before_bn.check(shaped_graph(model, torch.randn(2, length, 3)))) == []
    # the fold would change what the model computes: the bias is not dead here
    folded = copy.deepcopy(model)
    with torch.no_grad():
        folded.bn.running_mean -= folded.fc.bias[:length] if length == features else 0
        folded.fc.bias = None
    x = torch.randn(8, length, 3) * 3 + 2
    assert not torch.allclose(model.train()(x), folded.train()(x), atol=1e-3)
    # without shapes: a BatchNorm1d whose size is not the Linear's features shows the input
    # is 3-D; with equal sizes bnlint cannot tell, and offers no fix
    findings = bnlint.check(model, select=["BN001"]).findings
    if length != features:
        assert findings == []
    else:
        [finding] = findings
        assert finding.fix is None and "cannot tell" in finding.message


def test_linear_over_positions_flattened_into_batchnorm_is_folded_per_feature():
    class Flat(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 4)
            self.bn = nn.BatchNorm1d(5 * 4)

        def forward(self, x):
            return self.bn(self.fc(x).flatten(1))

    model = Flat()
    train(model, (8, 5, 3), steps=3)
    [finding] = bnlint.check(model).findings
    assert finding.fix == "safe"
    result = bnlint.fix(model)
    assert [e.module for e in result.applied] == ["fc"]
    assert_same_function(model, result.model, (8, 5, 3))


@pytest.mark.parametrize("pool", ["nn.MaxPool1d(2)", "nn.AdaptiveAvgPool1d(2)"])
def test_pooling_over_the_features_a_linear_bias_lies_along_is_not_bn001(pool):
    model = nn.Sequential(nn.Linear(3, 4), eval(pool), nn.BatchNorm1d(5))
    assert bnlint.check(model, select=["BN001"]).findings == []


def test_conv_on_an_unbatched_input_is_not_bn001_once_shapes_are_known():
    model = nn.Sequential(nn.Conv1d(3, 4, 1), nn.BatchNorm1d(6))  # (C, L): BN sees L features
    assert list(bias_before_bn.check(shaped_graph(model, torch.randn(3, 6)))) == []


@pytest.mark.parametrize("name", ["SiameseNet", "SharedStemNet", "FlattenHeadNet",
                                  "ResidualSubNet", "MLPHead", "SharedNormNet"])
def test_recorded_shapes_agree_with_the_structural_reading(name):
    """Where bnlint can read a layout from the graph alone, shapes from an example input give
    the same findings, fixes and messages."""

    model = getattr(fixture_module("fixable"), name)()
    without = [(h.module, h.fix, h.message, h.related) for h in
               bias_before_bn.check(shaped_graph(model))]
    with_shapes = [(h.module, h.fix, h.message, h.related) for h in
                   bias_before_bn.check(shaped_graph(model, torch.randn(4, 3, 16, 16)))]
    assert with_shapes == without and without


def test_a_declared_input_settles_the_rank_of_a_linear():
    """The example says the input is (batch, 6): with the shapes recorded the fix is safe, and
    exact. (A probed input would not do: it is a guess, and a Linear takes (batch, length, 6)
    as well.)"""
    model = TabularMLP()
    train(model, (16, 6), steps=3)
    [finding] = bnlint.check(model, example=torch.randn(4, 6)).findings
    assert finding.fix == "safe"
    result = bnlint.fix(model, example=torch.randn(4, 6))
    assert [e.code for e in result.applied] == ["BN001"]
    assert_same_function(model, result.model, (16, 6))
