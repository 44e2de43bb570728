"""BN008: dropout feeding BatchNorm. Case files in tests/rules/BN008 cover the common layouts
and the source edit; these cover what is and is not a dropout, the graph fix, and the combined
fix with BN002."""

import json

import pytest
import torch
from torch import fx, nn

import bnlint
from conftest import import_fresh, run_bnlint


def order(model: nn.Module) -> list[str]:
    """The class names of the modules the traced forward calls, in order."""
    gm = fx.symbolic_trace(model)
    return [type(gm.get_submodule(n.target)).__name__ for n in gm.graph.nodes
            if n.op == "call_module"]


def test_found_on_the_batchnorm_with_the_dropout_related():
    model = nn.Sequential(nn.Linear(8, 16, bias=False), nn.Dropout(0.25), nn.ReLU(),
                          nn.BatchNorm1d(16))
    report = bnlint.check(model, select=["BN008"])
    [finding] = report.findings
    assert (finding.code, finding.module, finding.related, finding.fix) == (
        "BN008", "3", ("1", "2"), "unsafe")
    assert "(p=0.25) through ReLU `2`" in finding.message


@pytest.mark.parametrize("dropout", [
    "F.dropout(x, 0.3)", "F.dropout(x, p=0.3, training=self.training)", "F.dropout2d(x, 0.1)",
    "torch.dropout(x, 0.3, True)",
])
def test_functional_dropout_in_training(lint_code, dropout):
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
                x = {dropout}
                return self.bn(x)
    """, select=["BN008"])
    [finding] = report.findings
    assert finding.line == 10 and finding.related == (dropout.split("(")[0],)


@pytest.mark.parametrize("between", [
    [nn.Dropout(0.0)], [nn.AlphaDropout(0.2)], [nn.Dropout(0.5), nn.Linear(16, 16, bias=False)],
], ids=["p=0", "alpha", "layer-between"])
def test_silent_where_batchnorm_sees_no_dropped_values(between):
    model = nn.Sequential(nn.Linear(8, 16, bias=False), *between, nn.BatchNorm1d(16))
    assert bnlint.check(model, select=["BN008"]).findings == []


def test_dropout_after_the_last_batchnorm_is_silent():
    model = nn.Sequential(nn.Linear(8, 16, bias=False), nn.BatchNorm1d(16), nn.ReLU(),
                          nn.Dropout(0.5), nn.Linear(16, 2))
    assert bnlint.check(model, select=["BN008"]).findings == []


def trained(model: nn.Module, shape) -> nn.Module:
    torch.manual_seed(0)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(3):
        loss = model(torch.randn(shape)).square().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model


def test_fix_moves_the_dropout_after_the_block_and_keeps_eval_outputs():
    """In eval mode dropout passes values through, so moving it keeps eval outputs; in
    training BatchNorm no longer sees dropped values."""
    model = trained(nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.Dropout2d(0.2),
                                  nn.MaxPool2d(2), nn.BatchNorm2d(8), nn.ReLU()), (4, 3, 12, 12))
    result = bnlint.fix(model, select=["BN008"], unsafe=True)
    assert [(e.code, e.module, e.related) for e in result.applied] == [
        ("BN008", "3", ("1", "2", "4"))]
    assert order(result.model) == ["Conv2d", "MaxPool2d", "BatchNorm2d", "ReLU", "Dropout2d"]
    assert order(model)[1] == "Dropout2d"  # the caller's model is untouched
    x = torch.randn(4, 3, 12, 12)
    model.eval(), result.model.eval()
    torch.testing.assert_close(result.model(x), model(x))
    assert bnlint.check(result.model, select=["BN008"]).findings == []


def test_fix_needs_unsafe_fixes():
    model = nn.Sequential(nn.Linear(8, 16, bias=False), nn.Dropout(0.5), nn.BatchNorm1d(16))
    result = bnlint.fix(model, select=["BN008"])
    assert result.applied == [] and "unsafe" in result.skipped[0].reason


@pytest.mark.parametrize("forward, reason", [
    ("d = self.drop(self.fc(x))\n                return self.bn(d) + d",
     "output also feeds other ops"),
    ("return self.bn1(self.drop2(self.conv(x)).flatten(1))", "have another layout"),
])
def test_moves_that_would_change_other_values_are_refused(lint_code, forward, reason):
    report = lint_code(f"""
        import torch.nn as nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(16, 16, bias=False)
                self.conv = nn.Conv2d(3, 4, 3, bias=False)
                self.drop = nn.Dropout(0.5)
                self.drop2 = nn.Dropout2d(0.5)
                self.bn = nn.BatchNorm1d(16)
                self.bn1 = nn.BatchNorm1d(16)

            def forward(self, x):
                {forward}
    """, select=["BN008"])
    [finding] = report.findings
    assert finding.fix is None and reason in finding.message


ACT_DROPOUT_BN = """\
from torch import nn

model = nn.Sequential(
    nn.Linear(12, 32, bias=False),
    nn.ReLU(),
    nn.Dropout(0.1),
    nn.BatchNorm1d(32),
    nn.Linear(32, 2),
)
"""


def test_activation_dropout_batchnorm_is_one_fix_for_both_rules():
    """BN002 and BN008 both report the BatchNorm; fixing both gives layer -> BatchNorm ->
    activation -> dropout, and nothing is left to find."""
    model = trained(eval(ACT_DROPOUT_BN.split("model = ")[1], {"nn": nn}), (8, 12))
    codes = {f.code for f in bnlint.check(model, select=["BN002", "BN008"]).findings}
    assert codes == {"BN002", "BN008"}
    result = bnlint.fix(model, select=["BN002", "BN008"], unsafe=True)
    assert {e.code for e in result.applied} == {"BN002", "BN008"} and not result.skipped
    assert order(result.model) == ["Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear"]
    assert bnlint.check(result.model, select=["BN"]).findings == []


def test_one_fix_run_edits_activation_dropout_batchnorm_to_the_fixed_point(project):
    path = project / "model.py"
    path.write_text(ACT_DROPOUT_BN, encoding="utf-8")
    result = run_bnlint("model.py", "--select", "BN002,BN008", "--fix", "--unsafe-fixes")
    assert result.exit_code == 1, result.output  # files changed
    assert "touches the same code" not in result.output
    assert path.read_text(encoding="utf-8") == ACT_DROPOUT_BN.replace(
        "    nn.ReLU(),\n    nn.Dropout(0.1),\n    nn.BatchNorm1d(32),\n",
        "    nn.BatchNorm1d(32),\n    nn.ReLU(),\n    nn.Dropout(0.1),\n")
    assert bnlint.check(import_fresh(path).model, select=["BN"]).findings == []


def test_bn008_alone_moves_only_the_dropout(project):
    """With BN002 not selected the activation keeps its place."""
    path = project / "model.py"
    path.write_text(ACT_DROPOUT_BN, encoding="utf-8")
    run_bnlint("model.py", "--select", "BN008", "--fix", "--unsafe-fixes")
    assert path.read_text(encoding="utf-8") == ACT_DROPOUT_BN.replace(
        "    nn.Dropout(0.1),\n    nn.BatchNorm1d(32),\n",
        "    nn.BatchNorm1d(32),\n    nn.Dropout(0.1),\n")


DROPOUT_ACT_BN = ACT_DROPOUT_BN.replace("    nn.ReLU(),\n    nn.Dropout(0.1),\n",
                                        "    nn.Dropout(0.1),\n    nn.ReLU(),\n")


def test_dropout_activation_batchnorm_is_fixed_for_both_rules_in_one_run(project):
    """BN002 swaps activation and BatchNorm, BN008 moves the dropout below them: the edits
    touch different lines, so one --fix makes both."""
    path = project / "model.py"
    path.write_text(DROPOUT_ACT_BN, encoding="utf-8")
    result = run_bnlint("model.py", "--select", "BN002,BN008", "--fix", "--unsafe-fixes")
    assert "touches the same code" not in result.output
    assert path.read_text(encoding="utf-8") == ACT_DROPOUT_BN.replace(
        "    nn.ReLU(),\n    nn.Dropout(0.1),\n    nn.BatchNorm1d(32),\n",
        "    nn.BatchNorm1d(32),\n    nn.ReLU(),\n    nn.Dropout(0.1),\n")
    assert bnlint.check(import_fresh(path).model, select=["BN"]).findings == []


def test_entries_sharing_a_line_trade_places(project):
    path = project / "model.py"
    path.write_text("from torch import nn\n\nmodel = nn.Sequential(nn.Linear(4, 8, bias=False), "
                    "nn.Dropout(0.5), nn.BatchNorm1d(8))  # a comment\n", encoding="utf-8")
    run_bnlint("model.py", "--select", "BN008", "--fix", "--unsafe-fixes")
    assert path.read_text(encoding="utf-8").splitlines()[-1] == (
        "model = nn.Sequential(nn.Linear(4, 8, bias=False), nn.BatchNorm1d(8), "
        "nn.Dropout(0.5))  # a comment")


def test_a_dropout_left_to_a_reorder_that_cannot_be_written_is_not_offered(project):
    """The dropout sits between activation and BatchNorm, so BN002's reorder would move it;
    where that reorder cannot be written (the BatchNorm is not in the activation's Sequential),
    neither finding keeps a fix mark, and each says why."""
    path = project / "model.py"
    source = ("from torch import nn\n\n\ndef build():\n"
              "    pre = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.ReLU(),\n"
              "                        nn.Dropout(0.2))\n"
              "    return nn.Sequential(pre, nn.BatchNorm2d(8))\n\n\nINPUT_SHAPE = (3, 8, 8)\n")
    path.write_text(source, encoding="utf-8")
    result = run_bnlint("model.py:build()", "--select", "BN002,BN008", "--format", "json")
    findings = {f["code"]: f for f in json.loads(result.stdout)["findings"]}
    assert set(findings) == {"BN002", "BN008"}
    assert all(f["fix"] is None for f in findings.values())
    assert "BN002's reorder of the BatchNorm moves the dropout" in findings["BN008"]["message"]
    run_bnlint("model.py:build()", "--select", "BN002,BN008", "--fix", "--unsafe-fixes")
    assert path.read_text(encoding="utf-8") == source
