"""BN009: frozen BatchNorm layers put in training mode for training, found by reading the
training script (the case files in tests/rules/BN009/ hold the rule's own traps)."""

import json
import textwrap

import pytest

from bnlint.lint import lint_specs
from conftest import code_cell, run_bnlint, write_notebook

HEADER = """\
import copy

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from data import loader

"""
STEP = """
for x, y in loader:
    loss = F.cross_entropy(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
"""


def bn009(tmp_path, body: str, step: bool = True):
    """BN009's findings on a script: the header, ``body``, and a training loop (``step``)."""
    path = tmp_path / "train.py"
    path.write_text(HEADER + textwrap.dedent(body) + STEP * step, encoding="utf-8")
    return [f for f in lint_specs([str(path)], select=["BN009"]).findings]


def test_points_at_the_train_call_and_names_the_frozen_part(tmp_path):
    [finding] = bn009(tmp_path, """\
        model = torchvision.models.resnet18()
        model.layer1.requires_grad_(False)
        for p in model.parameters():
            p.requires_grad = False
        model.fc = nn.Linear(512, 3)
        optimizer = torch.optim.SGD(model.fc.parameters(), lr=0.1)
        model.train()
        """)
    assert (finding.line, finding.col) == (16, 1)
    assert finding.message.startswith(
        "`model` holds BatchNorm and its parameters are frozen (at line 12), but "
        "`model.train()` at line 16 puts it in training mode for the training step at line 19")
    assert finding.related == ("model",) and finding.fix is None


@pytest.mark.parametrize("freezing", [
    # some parameters, chosen by name: which ones bnlint does not know
    "for name, p in model.named_parameters():\n    if 'fc' not in name:\n"
    "        p.requires_grad = False",
    # a slice of the parameters
    "for p in list(model.parameters())[:-2]:\n    p.requires_grad = False",
    # frozen, then made trainable again (gradual unfreezing)
    "model.requires_grad_(False)\nmodel.requires_grad_(True)",
    "model.requires_grad_(False)\nfor p in model.parameters():\n    p.requires_grad = True",
    # a value bnlint cannot know
    "model.requires_grad_(args.finetune_all)",
    # written by the script: a momentum teacher updated in place
    "model.requires_grad_(False)\nfor a, b in zip(student.parameters(), model.parameters()):\n"
    "    b.data = 0.99 * b.data + 0.01 * a.data",
    # the BatchNorm layers made trainable again, as test-time adaptation does
    "model.requires_grad_(False)\nfor m in model.modules():\n"
    "    if isinstance(m, nn.BatchNorm2d):\n        m.requires_grad_(True)",
])
def test_silent_unless_the_whole_part_stays_frozen(tmp_path, freezing):
    assert bn009(tmp_path, f"""\
model = torchvision.models.resnet18()
student = torchvision.models.resnet18()
{freezing}
optimizer = torch.optim.SGD(model.fc.parameters(), lr=0.1)
model.train()
""") == []


@pytest.mark.parametrize("build", [
    "from model import Net\nmodel = Net()",  # a class bnlint cannot find
    "model = torchvision.models.vgg16()",  # no BatchNorm
    "model = torchvision.models.detection.fasterrcnn_resnet50_fpn()",  # FrozenBatchNorm2d
    "model = torchvision.models.resnet18(norm_layer=nn.Identity)",
    "model = torch.load('model.pt')",
])
def test_silent_where_batchnorm_is_not_known_to_be_there(tmp_path, build):
    assert bn009(tmp_path, f"""\
{build}
model.requires_grad_(False)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
model.train()
""") == []


def test_silent_on_a_frozen_model_run_under_no_grad(tmp_path):
    """A teacher run without autograd is not trained (an inference in training mode there is
    BN003's to report)."""
    assert bn009(tmp_path, """\
        teacher = torchvision.models.resnet50()
        teacher.requires_grad_(False)
        model = nn.Linear(1000, 10)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for x, y in loader:
            with torch.no_grad():
                target = teacher(x)
            loss = F.mse_loss(model(target), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        """, step=False) == []


def test_a_train_override_anywhere_in_the_model_leaves_the_mode_unknown(tmp_path):
    found = bn009(tmp_path, """\
        class Backbone(nn.Module):
            def __init__(self):
                super().__init__()
                self.body = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))

            def train(self, mode=True):
                super().train(mode)
                for m in self.modules():
                    if isinstance(m, nn.BatchNorm2d):
                        m.eval()
                return self


        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.backbone = Backbone()
                self.head = nn.Linear(8, 2)


        model = Net()
        model.backbone.requires_grad_(False)
        optimizer = torch.optim.SGD(model.head.parameters(), lr=0.1)
        model.train()
        """)
    assert found == []


def test_suppression_and_prefix_selection_on_the_command_line(tmp_path):
    script = HEADER + textwrap.dedent("""\
        model = torchvision.models.resnet18()
        model.requires_grad_(False)
        model.fc = nn.Linear(512, 3)
        optimizer = torch.optim.SGD(model.fc.parameters(), lr=0.1)
        model.train()
        """) + STEP
    (tmp_path / "train.py").write_text(script)
    result = run_bnlint("train.py", "--select", "BN009", "--format", "concise", cwd=tmp_path)
    assert result.exit_code == 1 and "train.py:14:1: BN009" in result.output
    (tmp_path / "train.py").write_text(script.replace(
        "model.train()", "model.train()  # bnlint: ignore[BN009]"))
    result = run_bnlint("train.py", "--select", "BN009", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    (tmp_path / "pyproject.toml").write_text('[tool.bnlint]\nignore = ["BN01"]\n')
    (tmp_path / "train.py").write_text(script)
    result = run_bnlint("train.py", "--select", "BN", "--format", "concise", cwd=tmp_path)
    assert "BN009" in result.output


@pytest.mark.parametrize("update, found", [
    ("", True),
    ("for s, t in zip(model.parameters(), teacher.parameters()):\n"
     "        t.mul_(0.99).add_(s.detach(), alpha=0.01)", False),
    ("for t in teacher.parameters():\n        t.data.copy_(t.data * 0.99)", False),
])
def test_a_frozen_copy_is_reported_unless_the_script_updates_its_weights(tmp_path, update,
                                                                         found):
    """A momentum teacher: a copy of the trained model, frozen for the optimiser, whose
    parameters the script moves itself; its BatchNorm layers train on purpose."""
    findings = bn009(tmp_path, f"""\
model = torchvision.models.resnet18()
teacher = copy.deepcopy(model)
teacher.requires_grad_(False)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for x, y in loader:
    loss = F.mse_loss(model(x), teacher(x))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        {update or 'pass'}
""", step=False)
    assert [(f.line, f.message.split(" holds")[0]) for f in findings] == (
        [(15, "`teacher`")] if found else [])


def test_a_notebook_finding_names_cells(tmp_path):
    write_notebook(tmp_path / "finetune.ipynb",
          code_cell("import torch\nimport torchvision\nfrom torch import nn\n\n"
               "model = torchvision.models.resnet18()\nmodel.requires_grad_(False)\n"
               "model.fc = nn.Linear(512, 2)\n"
               "optimizer = torch.optim.SGD(model.fc.parameters(), lr=0.1)\n"),
          code_cell("model.train()\nfor x in torch.randn(3, 2, 3, 32, 32):\n"
               "    loss = model(x).pow(2).mean()\n    optimizer.zero_grad()\n"
               "    loss.backward()\n    optimizer.step()\n"))
    [finding] = json.loads(run_bnlint("finetune.ipynb", "--format", "json",
                                      cwd=tmp_path).stdout)["findings"]
    assert (finding["code"], finding["cell"], finding["line"]) == ("BN009", 2, 1)
    assert finding["message"].startswith(
        "`model` holds BatchNorm and its parameters are frozen (at line 6 of cell 1), but "
        "`model.train()` at line 1 of cell 2 puts it in training mode for the training step "
        "at line 3 of cell 2")
