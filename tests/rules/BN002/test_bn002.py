"""BN002: an activation feeding BatchNorm."""

import pytest
import torch.nn as nn
import torch.nn.functional as F

import bnlint
from conftest import FIXTURES, line_of


def test_finds_module_functional_and_method_forms_in_the_fixture():
    from bnlint.lint import lint_specs

    report = lint_specs([str(FIXTURES / "act_before_bn.py")], select=["BN002"])
    found = {(f.module, f.related, f.fix) for f in report.findings}
    assert found == {
        ("block1.bn", ("block1.act",), "unsafe"),
        ("bn2", ("F.relu",), "unsafe"),
        ("head.4", ("head.2", "head.3"), "unsafe"),  # LeakyReLU, then Dropout
        ("bn", (".relu()",), None),  # SkipNet: the activation also feeds the skip
    }
    assert all(f.code == "BN002" for f in report.findings)
    skip = next(f for f in report.findings if f.module == "bn")
    assert "not possible" in skip.message
    assert skip.line == line_of(FIXTURES / "act_before_bn.py", "self.bn = nn.BatchNorm2d(8)")


@pytest.mark.parametrize("fixture", ["clean.py", "vgg.py"])
def test_correct_orders_stay_silent(fixture):
    """conv -> BN -> act, pre-activation BN -> act -> conv, DenseNet concatenation."""
    from bnlint.lint import lint_specs

    assert lint_specs([str(FIXTURES / fixture)], select=["BN002"]).findings == []


@pytest.mark.parametrize("activation", [
    "nn.ReLU(inplace=True)", "nn.GELU()", "nn.SiLU()", "nn.LeakyReLU(0.2)", "nn.ELU()",
    "nn.Hardswish()", "nn.Mish()", "nn.Tanh()", "nn.Sigmoid()", "nn.PReLU()", "nn.ReLU6()",
])
def test_every_activation_module(activation):
    model = nn.Sequential(nn.Linear(4, 8, bias=False), eval(activation), nn.BatchNorm1d(8))
    [finding] = bnlint.check(model).findings
    assert (finding.code, finding.module, finding.related) == ("BN002", "2", ("1",))


@pytest.mark.parametrize("call", [
    "F.relu(x)", "F.relu(x, inplace=True)", "F.relu_(x)", "torch.relu(x)", "x.relu()",
    "x.relu_()", "F.leaky_relu(x, 0.1)", "F.gelu(x)", "F.silu(x)", "torch.sigmoid(x)",
    "x.tanh()", "F.hardswish(x)",
])
def test_every_functional_form(lint_code, call):
    report = lint_code(f"""
        import torch
        import torch.nn as nn
        import torch.nn.functional as F

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(3, 8, 3, bias=False)
                self.bn = nn.BatchNorm2d(8)

            def forward(self, x):
                x = self.conv(x)
                x = {call}
                return self.bn(x)
    """)
    [finding] = report.findings
    assert finding.code == "BN002" and finding.line == 10


def test_functional_batchnorm_after_activation(lint_code):
    report = lint_code("""
        import torch
        import torch.nn as nn
        import torch.nn.functional as F

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(3, 8, 3, bias=False)
                self.register_buffer("mean", torch.zeros(8))
                self.register_buffer("var", torch.ones(8))

            def forward(self, x):
                x = F.relu(self.conv(x))
                return F.batch_norm(x, self.mean, self.var, training=self.training)
    """)
    [finding] = report.findings
    assert finding.code == "BN002" and finding.line == 15 and finding.fix is None


def test_does_not_look_through_residual_add():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(8, 8, 3, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(8)

        def forward(self, x):
            return self.bn(F.relu(self.conv(x)) + x)

    assert bnlint.check(Block()).findings == []


class RepBlock(nn.Module):
    """A RepVGG-style block: 3x3 and 1x1 conv -> BN branches beside a BN-only identity branch,
    all applied to the previous block's ReLU output and summed."""

    def __init__(self, channels, branch_norm=True):
        super().__init__()
        norm = nn.BatchNorm2d if branch_norm else nn.Identity
        self.conv3 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn3 = norm(channels)
        self.conv1 = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn1 = norm(channels)
        self.identity = nn.BatchNorm2d(channels)
        self.act = nn.ReLU()

    def forward(self, x):
        out = self.bn3(self.conv3(x)) + self.bn1(self.conv1(x))
        out += self.identity(x)
        return self.act(out)


class RepMixer(nn.Module):
    """FastViT's token mixer: a conv -> BN branch minus a BN-only branch of the same input."""

    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x):
        return x + (self.bn(self.conv(x)) - self.norm(x))


@pytest.mark.parametrize("block", [RepBlock, RepMixer])
def test_identity_branch_of_a_multi_branch_block_is_not_reported(block):
    model = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.ReLU(), block(8), block(8))
    assert bnlint.check(model).findings == []


def test_batchnorm_summed_with_branches_without_batchnorm_is_still_reported():
    model = nn.Sequential(
        nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.ReLU(), RepBlock(8, branch_norm=False))
    report = bnlint.check(model)
    assert [(f.code, f.module) for f in report.findings] == [("BN002", "2.identity")]
    assert "not possible" in report.findings[0].message


def test_looks_through_pooling_and_flatten():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.BatchNorm1d(4 * 3 * 3))
    [finding] = bnlint.check(model).findings
    assert finding.related == ("1", "2", "3")


def test_softmax_is_not_an_activation_before_batchnorm():
    model = nn.Sequential(nn.Linear(4, 8, bias=False), nn.Softmax(dim=1), nn.BatchNorm1d(8))
    assert bnlint.check(model).findings == []


@pytest.mark.parametrize("comment, suppressed", [
    ("# bnlint: ignore[BN002]", True),
    ("# noqa: BN002", True),
    ("# noqa: BN001", False),
])
def test_suppression_on_the_batchnorm_line(lint_code, comment, suppressed):
    report = lint_code(f"""
        import torch.nn as nn

        model = nn.Sequential(
            nn.Conv2d(3, 8, 3, bias=False),
            nn.ReLU(),
            nn.BatchNorm2d(8),  {comment}
        )
    """)
    assert (report.findings == []) is suppressed
