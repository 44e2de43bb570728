"""--fix, --unsafe-fixes and --diff on the user's files: golden input -> expected pairs, and
what a user relies on around them (nothing written by --diff, idempotence, the edited file
still builds the same model, refusals)."""

import difflib
import json
import re
from collections import Counter
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import bnlint as bnlint_api
from bnlint.cli import main
from bnlint.edits import split_lines
from bnlint.lint import lint_specs
from conftest import FIXTURES, assert_same_function, import_fresh, run_bnlint, train

GOLDEN = Path(__file__).parent / "golden"
CASES = {  # case -> extra options, and the input shape of each model its file defines
    "loop_helper": ([], {"VGGish": (3, 16, 16)}),
    "formatting": ([], {"Stem": (3, 16, 16), "Head": (8, 16, 16), "Net": (3, 16, 16)}),
    "shared_helper": ([], {"Net": (3, 16, 16)}),
    "sequential_swap": (["--unsafe-fixes"], {"MLP": (12,), "ConvNet": (3, 16, 16)}),
    "forward_nested": (["--unsafe-fixes"], {"Net": (3, 16, 16), "Skip": (3, 16, 16)}),
    "forward_assignments": (["--unsafe-fixes"], {"Net": (3, 16, 16)}),
    "reorder_then_bias": (["--unsafe-fixes"], {"MLP": (8,)}),
}
def models_of(module, shapes: dict[str, tuple]) -> dict[str, nn.Module]:
    return {name: getattr(module, name)() for name in shapes}


def fixable_left(path: Path, options: list[str]) -> list[tuple[str, str]]:
    """(code, safety) of every finding a fresh run on ``path`` offers to fix with ``options``."""
    report = json.loads(run_bnlint(path.name, "--format", "json").stdout)
    wanted = {"safe", "unsafe"} if "--unsafe-fixes" in options else {"safe"}
    return [(f["code"], f["fix"]["safety"]) for f in report["findings"]
            if f["fix"] and f["fix"]["safety"] in wanted]


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case, project):
    before = (GOLDEN / case / "input.py").read_text(encoding="utf-8")
    expected = (GOLDEN / case / "expected.py").read_text(encoding="utf-8")
    # a fix that only the edits make possible is not in --diff: --fix makes it in a next round
    first_round = GOLDEN / case / "first_round.py"
    shown_after = first_round.read_text(encoding="utf-8") if first_round.exists() else expected
    path = project / "model.py"
    path.write_text(before, encoding="utf-8")

    options, shapes = CASES[case]
    shown = run_bnlint(path.name, "--diff", *options)
    assert path.read_text(encoding="utf-8") == before, "--diff wrote to the file"
    assert shown.exit_code == 1
    assert shown.stdout == "".join(difflib.unified_diff(
        split_lines(before), split_lines(shown_after), "a/model.py", "b/model.py"))

    fixed = run_bnlint(path.name, "--fix", *options)
    assert fixed.exit_code == 1, fixed.output
    assert path.read_text(encoding="utf-8") == expected
    # one --fix reaches the fixed point: a second run finds nothing it would fix
    assert fixable_left(path, options) == []
    again = run_bnlint(path.name, "--fix", *options)
    assert path.read_text(encoding="utf-8") == expected
    assert not re.search(r"\b[1-9]\d* fixed", again.stdout)

    # the edited file, read afresh, builds the same shapes, less the biases it dropped
    copy = project / "model_again.py"
    copy.write_text(expected, encoding="utf-8")
    original = project / "model_original.py"
    original.write_text(before, encoding="utf-8")
    assert_same_shapes(models_of(import_fresh(original), shapes),
                       models_of(import_fresh(copy), shapes), shapes)


def assert_same_shapes(originals: dict[str, nn.Module], edited: dict[str, nn.Module],
                       shapes: dict[str, tuple]) -> None:
    """Same parameters and buffers but the dropped biases, and same output shape."""
    for name, model in originals.items():
        before, after = model.state_dict(), edited[name].state_dict()
        biases = {f"{n}.bias" for n, m in model.named_modules()
                  if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))}
        dropped = [tuple(before[k].shape) for k in before.keys() - after.keys() if k in biases]
        assert Counter(tuple(v.shape) for v in after.values()) + Counter(dropped) == Counter(
            tuple(v.shape) for v in before.values())
        x = torch.randn(4, *shapes[name])
        assert edited[name].eval()(x).shape == model.eval()(x).shape


def test_windows_line_endings_and_page_breaks_survive(project):
    """Only the edited characters change: CRLF stays CRLF (also in the inserted line), and a
    form feed, which str.splitlines would count as a line break, moves nothing."""
    source = (
        "import torch.nn as nn\r\n\x0c\r\n"
        "class Net(nn.Module):\r\n"
        "    def __init__(self):\r\n"
        "        super().__init__()\r\n"
        "        self.conv = nn.Conv2d(  # \x0c in a comment\r\n"
        "            3,\r\n"
        "            8,\r\n"
        "            3,\r\n"
        "        )\r\n"
        "        self.bn = nn.BatchNorm2d(8)\r\n\r\n"
        "    def forward(self, x):\r\n"
        "        return self.bn(self.conv(x))\r\n"
    )
    path = project / "net.py"
    path.write_bytes(source.encode())
    assert run_bnlint(path.name, "--fix").exit_code == 1
    expected = source.replace("            3,\r\n        )",
                              "            3,\r\n            bias=False,\r\n        )")
    assert path.read_bytes() == expected.encode()


def test_suppressed_line_is_not_edited(project):
    source = (FIXTURES / "vgg.py").read_text().replace(
        "kernel_size=3, padding=1),", "kernel_size=3, padding=1),  # bnlint: ignore[BN001]")
    path = project / "vgg.py"
    path.write_text(source)
    result = run_bnlint(path.name, "--fix")
    assert path.read_text() == source
    assert result.exit_code == 0, result.output


def test_bundled_fixture_is_fixed_in_a_copy_and_builds_the_same_model(project):
    fixture = FIXTURES / "vgg.py"
    pristine = fixture.read_bytes()
    path = project / "vgg.py"
    path.write_bytes(pristine)
    result = run_bnlint(path.name, "--fix")
    assert result.exit_code == 1
    assert "(1 fixed, 0 remaining" in result.stdout
    assert fixture.read_bytes() == pristine
    assert path.read_text().count("bias=False") == 1
    shapes = {"vgg11_small": (3, 32, 32)}
    assert_same_shapes({"vgg11_small": import_fresh(fixture).vgg11_small()},
                       {"vgg11_small": import_fresh(path).vgg11_small()}, shapes)


def test_a_file_changed_after_reading_is_not_written(project):
    from bnlint.rules import enabled_codes
    from bnlint.sourcefix import SourceFixer

    path = project / "vgg.py"
    path.write_text((FIXTURES / "vgg.py").read_text())
    fixer = SourceFixer(enabled_codes(), unsafe=False, named=[path.name])
    lint_specs([path.name], on_model=fixer.visit_model, on_script=fixer.visit_script)
    plan = fixer.plan()
    assert plan.changes
    edited_meanwhile = path.read_text() + "# a line the user just typed\n"
    path.write_text(edited_meanwhile)
    plan.write()
    assert path.read_text() == edited_meanwhile
    assert plan.changes == {}
    assert any("changed since bnlint read it" in str(n) for n in plan.notes)


def hinted(output: str) -> tuple[int, int]:
    """The counts of the text summary's hint: fixable with --fix, and with --unsafe-fixes."""
    safe = re.search(r"(\d+) fixable with `--fix`", output)
    unsafe = re.search(r"(\d+) (?:more )?with `--fix --unsafe-fixes`", output)
    return int(safe[1]) if safe else 0, int(unsafe[1]) if unsafe else 0


def fixed_by(output: str) -> int:
    found = re.search(r"\((\d+) fixed, ", output)
    return int(found[1]) if found else 0


def _outside(tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "vgg.py").write_text((FIXTURES / "vgg.py").read_text())
    (lib / "predict.py").write_text((FIXTURES / "scripts" / "predict_train_mode.py").read_text())
    return [str(lib / "vgg.py"), str(lib / "predict.py")], []


def _in_place(tmp_path):
    (tmp_path / "work" / "small.py").write_text(
        (FIXTURES / "vgg.py").read_text() + (FIXTURES / "act_before_bn.py").read_text())
    return ["small.py"], []


def _golden(tmp_path):
    (tmp_path / "work" / "net.py").write_text(
        (GOLDEN / "forward_assignments" / "input.py").read_text())
    return ["net.py"], []


@pytest.mark.parametrize("setup, safe, unsafe, why", [
    pytest.param(_outside, 0, 0, "is outside the working directory",
                 id="files outside the working directory"),
    pytest.param(lambda _: (["torch.nn:Sequential(Conv2d(3, 4, 3), BatchNorm2d(4))"], []), 0, 0,
                 "no line of a .py file built the layer", id="a model built by a spec expression"),
    pytest.param(lambda _: ([str(FIXTURES / "deep_plain.py")], ["--select", "BN005"]), 0, 0,
                 "bnlint has no source edit for BN005", id="a rule without a source edit"),
    pytest.param(_golden, 0, 3, "and this one is neither",
                 id="a forward whose calls cannot all be rewritten"),
    pytest.param(_in_place, 1, 4, None, id="safe and unsafe edits"),
])
def test_hints_count_what_the_fix_commands_change(tmp_path, monkeypatch, setup, safe, unsafe,
                                                  why):
    """`[*]`, "N fixable with `--fix`" and "N with `--fix --unsafe-fixes`" count exactly the
    findings that those commands then fix; the others say why the source keeps them."""
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    paths, options = setup(tmp_path)
    before = {p: Path(p).read_text() for p in paths if Path(p).is_file()}
    result = run_bnlint(*paths, *options)
    assert hinted(result.stdout) == (safe, unsafe)
    assert result.stdout.count(" [*] ") == safe
    if why:
        assert "(Not fixable in the source: " in result.stdout and why in result.stdout
    data = json.loads(run_bnlint(*paths, *options, "--format", "json").stdout)
    assert Counter(f["fix"]["safety"] for f in data["findings"] if f["fix"]) == Counter(
        safe=safe, unsafe=unsafe)
    assert fixed_by(run_bnlint(*paths, *options, "--fix").stdout) == safe
    assert fixed_by(run_bnlint(*paths, *options, "--fix", "--unsafe-fixes").stdout) == unsafe
    if safe == unsafe == 0:
        assert {p: Path(p).read_text() for p in before} == before


def test_the_unsafe_hint_says_what_the_fixes_change(project):
    """Retraining is the cost of fixes that change a model, not of a script edit."""
    (project / "predict.py").write_text(
        (FIXTURES / "scripts" / "predict_train_mode.py").read_text())
    (project / "small.py").write_text((FIXTURES / "act_before_bn.py").read_text())
    script = run_bnlint("predict.py", "--fix")
    assert "2 more fixes with --unsafe-fixes (they change what the script does)." in script.stderr
    model = run_bnlint("small.py", "--fix")
    assert ("3 more fixes with --unsafe-fixes (they change what the model computes, so it "
            "needs training again).") in model.stderr
    both = run_bnlint("predict.py", "small.py", "--fix")
    assert ("5 more fixes with --unsafe-fixes (they change what the models compute (they need "
            "training again) and what the scripts do).") in both.stderr


def test_unsafe_fixes_alone_is_a_usage_error(project):
    result = run_bnlint("model.py", "--unsafe-fixes")
    assert result.exit_code == 2
    assert "--unsafe-fixes goes with --fix, --diff or --save-fixed" in result.output


def test_a_call_shared_by_two_models_is_edited_only_if_both_are_fixed(project):
    """Model A's conv feeds BatchNorm, model B's (built by the same helper) does not: the
    helper keeps its bias, and the note names the layer that needs it."""
    path = project / "two.py"
    source = (
        "import torch.nn as nn\n\n\n"
        "def conv(channels):\n"
        "    return nn.Conv2d(channels, channels, 3, padding=1)\n\n\n"
        "class A(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.conv = conv(4)\n"
        "        self.bn = nn.BatchNorm2d(4)\n\n"
        "    def forward(self, x):\n"
        "        return self.bn(self.conv(x))\n\n\n"
        "class B(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.conv = conv(4)\n\n"
        "    def forward(self, x):\n"
        "        return self.conv(x).relu()\n"
    )
    path.write_text(source)
    result = run_bnlint(path.name, "--fix")
    assert path.read_text() == source
    assert ("two.py:5:12: BN001 Conv2d `conv` has a bias, but its output goes into BatchNorm2d "
            "`bn`, which subtracts the per-channel mean: the bias is dead weight. Use "
            "bias=False. (Not fixable in the source: the same call also builds `conv` "
            "(in two.py:B()), where its bias is not dead.)") in result.stdout
    assert result.exit_code == 1
    assert "[*]" not in run_bnlint(path.name).stdout


def test_a_helper_in_a_file_that_was_not_named_is_not_edited(project):
    """net_b.py also builds layers with the helper, where the bias matters: editing the helper
    while checking only net_a.py would silently change net_b's model."""
    (project / "common.py").write_text(
        "import torch.nn as nn\n\n\ndef conv3x3(cin, cout):\n"
        "    return nn.Conv2d(cin, cout, 3, padding=1)\n")
    (project / "net_a.py").write_text(
        "import torch.nn as nn\nfrom common import conv3x3\n\n"
        "model = nn.Sequential(conv3x3(3, 8), nn.BatchNorm2d(8), nn.ReLU())\n")
    helper = (project / "common.py").read_text()
    result = CliRunner().invoke(main, ["net_a.py", "--fix"])
    assert (project / "common.py").read_text() == helper
    assert "common.py was not named on the command line" in result.output
    result = CliRunner().invoke(main, ["net_a.py", "common.py", "--fix"])
    assert "bias=False" in (project / "common.py").read_text()


@pytest.mark.parametrize("case", ["forward_nested", "forward_assignments"])
def test_the_reordered_source_computes_what_the_graph_fix_computes(case, project):
    """The rewritten forward (or Sequential) is BN002's graph fix written as code: with the
    same weights, the model the edited file builds and ``bnlint.fix``'s model agree, in
    training mode and then in eval mode."""
    # the BatchNorm the source fix leaves in place: the graph fix must leave it too
    kept = "self.bn4 = nn.BatchNorm1d(8)"
    before, after = project / "before.py", project / "after.py"
    for path, name in ((before, "input.py"), (after, "expected.py")):
        text = (GOLDEN / case / name).read_text(encoding="utf-8")
        path.write_text(text.replace(kept, f"{kept}  # bnlint: ignore[BN002]"), encoding="utf-8")
    original, edited = import_fresh(before), import_fresh(after)
    for name, shape in CASES[case][1].items():
        model = getattr(original, name)()
        train(model, (8, *shape), steps=2)
        graph_fixed = bnlint_api.fix(model, select=["BN002"], unsafe=True).model
        source_fixed = getattr(edited, name)()
        source_fixed.load_state_dict(model.state_dict())
        assert_same_function(graph_fixed, source_fixed, (8, *shape))


def test_a_forward_that_also_runs_where_the_fix_does_not_apply_is_not_edited(project):
    """Block's forward applies `act` before `bn`; one Block gets an identity for `act`, so the
    shared forward keeps its order, and the finding says why instead of offering a fix."""
    source = (
        "import torch.nn as nn\n\n\n"
        "class Block(nn.Module):\n"
        "    def __init__(self, act):\n"
        "        super().__init__()\n"
        "        self.conv = nn.Conv2d(4, 4, 3, padding=1, bias=False)\n"
        "        self.act = act\n"
        "        self.bn = nn.BatchNorm2d(4)\n\n"
        "    def forward(self, x):\n"
        "        return self.bn(self.act(self.conv(x)))\n\n\n"
        "model = nn.Sequential(Block(nn.ReLU()), Block(nn.Identity()))\n"
    )
    path = project / "blocks.py"
    path.write_text(source)
    result = run_bnlint(path.name)
    assert hinted(result.stdout) == (0, 0)
    assert ("(Not fixable in the source: the same forward also runs for `1.bn` (in "
            "blocks.py:model), where the BatchNorm keeps its place.)") in result.stdout
    run_bnlint(path.name, "--fix", "--unsafe-fixes")
    assert path.read_text() == source
