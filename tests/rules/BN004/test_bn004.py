"""BN004: a model trained while an earlier evaluation may have left it in eval mode, found by
reading the training scripts."""

import ast

import pytest

from bnlint.edits import apply_edits
from bnlint.engine import script_hits
from bnlint.lint import lint_specs
from bnlint.rules import RULES
from conftest import FIXTURES, line_of

SCRIPTS = FIXTURES / "scripts"
HEADER = "import torch\nfrom torch import nn\n"

LOOP = """
model = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
{setup}
for epoch in range(3):
{epoch_top}
    for x in torch.randn(4, 16, 8):
        loss = model(x).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
{epoch_end}
"""


def bn004(report):
    return [f for f in report.findings if f.code == "BN004"]


def script(lint_code, body: str):
    return bn004(lint_code(HEADER + body, name="train.py", select=["BN004"]))


def loop(setup="", epoch_top="", epoch_end=""):
    return LOOP.format(setup=setup, epoch_top=f"    {epoch_top}" if epoch_top else "",
                       epoch_end=f"    {epoch_end}" if epoch_end else "")


def fixed(path):
    text = path.read_text()
    hits = script_hits([RULES["BN004"]], path, text, ast.parse(text))
    return apply_edits(text, [edit for _, hit in hits for edit in hit.edits])


@pytest.mark.parametrize("name, needle, variable, cause", [
    ("train_val_leak.py", "loss = F.cross_entropy(model(images), labels)", "model",
     "in `evaluate()` called at line"),
    ("trainer_leak.py", "loss = F.cross_entropy(self.model(x), y)", "self.model",
     "in `validate()` called at line"),
])
def test_finds_training_after_a_validation_in_fixture_scripts(name, needle, variable, cause):
    path = SCRIPTS / name
    [finding] = bn004(lint_specs([str(path)], select=["BN004"]))
    assert finding.line == line_of(path, needle)
    assert finding.path == f"fixtures/scripts/{name}"
    assert f"`{variable}` is trained here but may be in eval mode" in finding.message
    assert cause in finding.message and "previous pass of the loop at line" in finding.message
    assert finding.related == (cause.split("`")[1].rstrip("()"),)
    assert finding.fix == "unsafe"


@pytest.mark.parametrize("name", [
    "train_val_ok.py", "frozen_backbone.py", "mode_variable.py", "predict_eval_mode.py",
    "export_eval_mode.py", "validate_in_train_mode.py",
])
def test_silent_on_scripts_that_keep_the_mode_right(name):
    assert bn004(lint_specs([str(SCRIPTS / name)], select=["BN004"])) == []


VALIDATE = """def validate(net):
    net.eval()
    with torch.no_grad():
        return net(torch.randn(4, 8)).mean()
"""


@pytest.mark.parametrize("setup, epoch_end, line, cause", [
    # a direct switch at the end of every epoch, train() only once before the loop
    ("model.train()", "model.eval()", 10, "set by `model.eval()` at line 14"),
    # a validation helper, with a new model never switched to training mode explicitly
    (VALIDATE, "print(validate(model))", 14,
     "set by `net.eval()` at line 7, in `validate()` called at line 18"),
])
def test_finds_eval_leaking_into_the_next_epoch(lint_code, setup, epoch_end, line, cause):
    [finding] = script(lint_code, loop(setup, "", epoch_end))
    assert finding.line == line
    assert cause in finding.message


@pytest.mark.parametrize("setup, epoch_top, epoch_end", [
    # train() at the top of every epoch
    ("", "model.train()", "model.eval()"),
    # fine-tuning with BatchNorm frozen: eval() on purpose, at the top of each epoch
    ("", "model.eval()", ""),
    # frozen on purpose once, no evaluation in between
    ("model.eval()", "", ""),
    # the mode decided by a flag bnlint cannot know
    ("import sys", "model.train('--freeze' not in sys.argv)", "model.eval()"),
])
def test_silent_when_the_mode_is_deliberate_or_restored(lint_code, setup, epoch_top, epoch_end):
    assert script(lint_code, loop(setup, epoch_top, epoch_end)) == []


def test_finds_training_right_after_an_evaluation(lint_code):
    [finding] = script(lint_code, """
model = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
model.eval()
with torch.no_grad():
    baseline = model(torch.randn(16, 8)).mean()
for x in torch.randn(4, 16, 8):
    loss = model(x).pow(2).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
""")
    assert finding.line == 10
    assert "for the inference at line 8" in finding.message


def test_silent_on_an_eval_mode_teacher(lint_code):
    """A teacher evaluated, then used (without no_grad) to train a student: its parameters go to
    no optimiser and it is never in training mode, so eval mode is deliberate."""
    assert script(lint_code, """
teacher = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8))
student = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8))
optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
teacher.eval()
with torch.no_grad():
    print(teacher(torch.randn(16, 8)).mean())
student.train()
for epoch in range(3):
    for x in torch.randn(4, 16, 8):
        loss = (student(x) - teacher(x).detach()).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
""") == []


def test_follows_a_training_helper_called_in_the_loop(lint_code):
    """The training step lives in a helper that takes the model; the evaluation that leaks
    is another helper, both called from the epoch loop of main()."""
    [finding] = script(lint_code, """
def train_one_epoch(model, optimizer):
    for x in torch.randn(4, 16, 8):
        loss = model(x).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@torch.no_grad()
def evaluate(model):
    model.eval()
    return model(torch.randn(16, 8)).mean()


def main():
    net = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8))
    optimizer = torch.optim.Adam(net.parameters())
    for epoch in range(3):
        train_one_epoch(net, optimizer)
        print(evaluate(net))


if __name__ == "__main__":
    main()
""")
    assert finding.line == 6
    assert "in `evaluate()` called at line 23" in finding.message


def test_fix_moves_train_to_the_top_of_the_epoch_loop():
    """The evaluation at the end of each epoch leaks into the next one: train() belongs at
    the top of the epoch loop, not of the batch loop, and the call before the epoch loop,
    which then does nothing, goes."""
    path = SCRIPTS / "train_val_leak.py"
    before = path.read_text().splitlines()
    after = fixed(path).splitlines()
    epoch = after.index("for epoch in range(3):")
    assert after[epoch - 1:epoch + 3] == [
        "optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)",
        "for epoch in range(3):",
        "    model.train()",
        "    for images, labels in train_loader:",
    ]
    assert after.count("    model.train()") == 1 and "model.train()" not in after
    assert len(after) == len(before)


def test_fix_keeps_a_train_call_that_is_not_right_before_the_loop(lint_code, tmp_path):
    [finding] = script(lint_code, loop("model.train()\nprint('start')", "", "model.eval()"))
    assert finding.fix == "unsafe"
    after = fixed(tmp_path / "train.py").splitlines()
    assert after.count("model.train()") == 1
    epoch = after.index("for epoch in range(3):")
    assert after[epoch + 1:epoch + 4] == ["", "    model.train()",
                                          "    for x in torch.randn(4, 16, 8):"]


def test_fixed_scripts_are_clean(tmp_path):
    for name in ("train_val_leak.py", "trainer_leak.py"):
        path = tmp_path / name
        path.write_text(fixed(SCRIPTS / name))
        assert bn004(lint_specs([str(path)])) == []


def test_fix_falls_back_to_the_step_when_the_loop_top_is_not_enough(lint_code, tmp_path):
    """A mid-epoch evaluation after the top of the loop would switch it back again."""
    [finding] = script(lint_code, """
model = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
model.train()
for step, x in enumerate(torch.randn(40, 16, 8)):
    if step % 10 == 0:
        model.eval()
        with torch.no_grad():
            print(model(x).mean())
    loss = model(x).pow(2).mean()
    loss.backward()
    optimizer.step()
""")
    assert finding.line == 12 and finding.fix == "unsafe"
    path = tmp_path / "train.py"
    after = fixed(path).splitlines()
    assert after[11:13] == ["    model.train()", "    loss = model(x).pow(2).mean()"]


@pytest.mark.parametrize("comment", ["# bnlint: ignore[BN004]", "# noqa: BN004"])
def test_suppressed_by_a_comment_on_the_training_step(lint_code, tmp_path, comment):
    body = loop("model.train()", "", "model.eval()").replace(
        "loss = model(x).pow(2).mean()", f"loss = model(x).pow(2).mean()  {comment}")
    assert script(lint_code, body) == []
    assert fixed(tmp_path / "train.py") == (tmp_path / "train.py").read_text()


def test_command_line_unsafe_fix(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from bnlint.cli import main

    (tmp_path / "train.py").write_text((SCRIPTS / "trainer_leak.py").read_text())
    monkeypatch.chdir(tmp_path)
    before = CliRunner().invoke(main, ["train.py", "--select", "BN004"])
    assert before.exit_code == 1 and "train.py:28:40: BN004 `self.model`" in before.output
    CliRunner().invoke(main, ["train.py", "--select", "BN004", "--fix", "--unsafe-fixes"])
    lines = (tmp_path / "train.py").read_text().splitlines()
    assert lines[23:27] == ["    def fit(self, epochs):",
                            "        for epoch in range(epochs):",
                            "            self.model.train()",
                            "            for x, y in self.train_loader:"]
    assert CliRunner().invoke(main, ["train.py", "--select", "BN004"]).exit_code == 0
