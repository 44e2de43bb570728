"""BN001: a biased conv/linear layer feeding BatchNorm."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import bnlint
from conftest import FIXTURES, line_of


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
