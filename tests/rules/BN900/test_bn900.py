"""BN900: a suppression comment that suppresses nothing, judged only for the rules that ran and
where they looked."""

import json
import textwrap

from bnlint.rules import RULES
from conftest import run_bnlint

MODEL = '''\
import torch.nn as nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, bias=False)  # bnlint: ignore[BN001]
        self.bn1 = nn.BatchNorm2d(8)
        self.proj = nn.Conv2d(
            8, 8, 1)  # noqa: BN001, E501
        self.bn2 = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 2)  # noqa
        self.note = "# bnlint: ignore[BN002]"

    def forward(self, x):
        x = self.bn2(self.proj(self.bn1(self.stem(x))))
        return self.head(x.mean((2, 3)))
'''

SCRIPT = '''\
import torch

from model import Net

model = Net()
model.eval()  # bnlint: ignore[BN003]
with torch.no_grad():
    print(model(torch.randn(2, 3, 8, 8)))
'''

DYNAMIC = '''\
import torch
import torch.nn as nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, bias=False)  # bnlint: ignore[BN001]
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x):
        x = self.conv(x)  # how often the BatchNorm runs depends on the input's size
        for _ in range(1 + int(x.shape[-1] > 16)):
            x = self.bn(x)
        return x
'''


def write(folder, name, text):
    (folder / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return name


def bn900(folder, *args):
    result = run_bnlint(*args, "--format", "json", cwd=folder)
    report = json.loads(result.stdout)
    return [(f["path"], f["line"], f["col"], f["message"]) for f in report["findings"]
            if f["code"] == "BN900"], report


def test_off_by_default():
    assert RULES["BN900"].default is False


def test_reports_the_comments_that_silenced_nothing_and_only_those(tmp_path):
    write(tmp_path, "model.py", MODEL)
    write(tmp_path, "predict.py", SCRIPT)
    found, report = bn900(tmp_path, "model.py", "predict.py", "--select", "ALL")
    assert [(path, line) for path, line, _, _ in found] == [("model.py", 7), ("predict.py", 6)]
    # the stem has no bias any more, and the script calls eval(): both comments are stale
    assert found[0][2] == MODEL.splitlines()[6].index("#") + 1
    assert found[0][3] == ("`# bnlint: ignore[BN001]`: no BN001 finding here to silence. "
                           "Remove it.")
    assert "no BN003 finding here" in found[1][3]
    # the comment on the second line of a call that BN001 reports is used; a bare noqa, which
    # other linters read too, and text in a string are never judged
    assert [f["code"] for f in report["findings"]] == ["BN900", "BN900"]


def test_codes_a_comment_still_needs_are_kept(tmp_path):
    write(tmp_path, "model.py", MODEL.replace("# noqa: BN001, E501", "# noqa: BN001, BN002"))
    found, _ = bn900(tmp_path, "model.py", "--select", "ALL")
    [(_, line, _, message)] = [f for f in found if f[1] == 10]
    assert message.endswith("no BN002 finding here to silence. Remove BN002 from it.")


def test_static_judges_no_graph_rule_suppression(tmp_path):
    write(tmp_path, "model.py", MODEL)
    write(tmp_path, "predict.py", SCRIPT)
    found, _ = bn900(tmp_path, "model.py", "predict.py", "--select", "ALL", "--static")
    assert [(path, line) for path, line, _, _ in found] == [("predict.py", 6)]


def test_rules_that_did_not_run_are_not_judged(tmp_path):
    write(tmp_path, "model.py", MODEL)
    found, _ = bn900(tmp_path, "model.py", "--select", "BN002,BN900")
    assert found == []


def test_lines_no_model_of_the_run_built_are_not_judged(tmp_path):
    """A helper's suppression may serve models this run did not check (pre-commit names only
    the changed files); a model whose forward could not be traced may hide the connection."""
    write(tmp_path, "blocks.py", '''\
        import torch.nn as nn


        def conv_bn(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3), nn.BatchNorm2d(cout))  # noqa: BN001
    ''')
    write(tmp_path, "dynamic.py", DYNAMIC.replace("(self, x):", "(self, batch):").replace(
        "self.conv(x)", "self.conv(batch[\"image\"])"))  # no input bnlint can guess
    found, report = bn900(tmp_path, "blocks.py", "dynamic.py", "--select", "ALL")
    assert found == [] and report["models"][0]["opaque"] == [""]


def test_lines_of_a_model_recorded_on_an_input_are_judged(tmp_path):
    """Where fx cannot follow a forward, bnlint records a run of it: the model is seen in full,
    so its comments are judged like those of a traced one."""
    write(tmp_path, "dynamic.py", DYNAMIC)
    found, report = bn900(tmp_path, "dynamic.py", "--select", "ALL")
    assert report["models"][0]["opaque"] == []
    assert [(path, line) for path, line, _, _ in found] == [("dynamic.py", 8)]


def test_unknown_codes_in_its_own_comments_are_reported_whatever_ran(tmp_path):
    write(tmp_path, "model.py", MODEL.replace("ignore[BN001]", "ignore[BN0001]"))
    found, _ = bn900(tmp_path, "model.py", "--select", "BN900")
    [(_, line, _, message)] = found
    assert line == 7 and "BN0001 is not a bnlint rule" in message


def test_a_comment_naming_bn900_is_left_alone(tmp_path):
    write(tmp_path, "model.py", MODEL.replace("ignore[BN001]", "ignore[BN001, BN900]"))
    found, _ = bn900(tmp_path, "model.py", "--select", "ALL")
    assert found == []


def test_a_bare_bnlint_ignore_is_judged_only_when_every_rule_ran(tmp_path):
    write(tmp_path, "predict.py", SCRIPT.replace("# bnlint: ignore[BN003]", "# bnlint: ignore"))
    found, _ = bn900(tmp_path, "predict.py", "--select", "ALL")
    assert found == []  # no model was built on that line: the graph rules did not look there
    write(tmp_path, "model.py", MODEL.replace("ignore[BN001]", "ignore"))
    found, _ = bn900(tmp_path, "model.py", "--select", "ALL")
    [(_, line, _, message)] = found
    assert line == 7 and "no finding of any rule here to silence" in message
    found, _ = bn900(tmp_path, "model.py", "--select", "BN001,BN900")
    assert found == []


def test_per_file_ignores_and_suppression_of_its_own_finding(tmp_path):
    write(tmp_path, "model.py", MODEL)
    (tmp_path / "pyproject.toml").write_text('[tool.bnlint]\nper-file-ignores = '
                                             '{ "model.py" = ["BN900"] }\n')
    found, _ = bn900(tmp_path, "model.py", "--select", "ALL")
    assert found == []
