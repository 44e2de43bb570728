"""--fix, --unsafe-fixes and --diff on the user's files: golden input -> expected pairs, and
what a user relies on around them (nothing written by --diff, idempotence, the edited file
still builds the same model, refusals)."""

import difflib
import importlib.util
import itertools
from collections import Counter
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from bnlint.cli import main
from bnlint.edits import split_lines
from bnlint.lint import lint_specs
from tests.conftest import FIXTURES

GOLDEN = Path(__file__).parent / "golden"
CASES = {  # case -> extra options, and the input shape of each model its file defines
    "loop_helper": ([], {"VGGish": (3, 16, 16)}),
    "formatting": ([], {"Stem": (3, 16, 16), "Head": (8, 16, 16), "Net": (3, 16, 16)}),
    "shared_helper": ([], {"Net": (3, 16, 16)}),
    "sequential_swap": (["--unsafe-fixes"], {"MLP": (12,), "ConvNet": (3, 16, 16)}),
}
_names = itertools.count()


def bnlint(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def import_fresh(path: Path):
    """Import a file under a name never used before, so an edited file is read again."""
    spec = importlib.util.spec_from_file_location(f"edited_{next(_names)}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def models_of(module, shapes: dict[str, tuple]) -> dict[str, nn.Module]:
    return {name: getattr(module, name)() for name in shapes}


@pytest.fixture
def project(tmp_path, monkeypatch):
    """An empty project folder as the working directory (bnlint edits only files below it)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case, project):
    before = (GOLDEN / case / "input.py").read_text(encoding="utf-8")
    expected = (GOLDEN / case / "expected.py").read_text(encoding="utf-8")
    path = project / "model.py"
    path.write_text(before, encoding="utf-8")

    options, shapes = CASES[case]
    shown = bnlint(path.name, "--diff", *options)
    assert path.read_text(encoding="utf-8") == before, "--diff wrote to the file"
    assert shown.exit_code == 1
    assert shown.stdout == "".join(difflib.unified_diff(
        split_lines(before), split_lines(expected), "a/model.py", "b/model.py"))

    fixed = bnlint(path.name, "--fix", *options)
    assert fixed.exit_code == 1, fixed.output
    assert path.read_text(encoding="utf-8") == expected
    again = bnlint(path.name, "--fix", *options)
    assert path.read_text(encoding="utf-8") == expected
    assert "0 fixed" in again.stdout

    # the edited file, read afresh, has no fixable BN001 left and builds the same shapes,
    # less the biases it dropped
    copy = project / "model_again.py"
    copy.write_text(expected, encoding="utf-8")
    report = lint_specs([copy.name])
    assert not [f for f in report.findings if f.code == "BN001" and f.fix]
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
    assert bnlint(path.name, "--fix").exit_code == 1
    expected = source.replace("            3,\r\n        )",
                              "            3,\r\n            bias=False,\r\n        )")
    assert path.read_bytes() == expected.encode()


def test_suppressed_line_is_not_edited(project):
    source = (FIXTURES / "vgg.py").read_text().replace(
        "kernel_size=3, padding=1),", "kernel_size=3, padding=1),  # bnlint: ignore[BN001]")
    path = project / "vgg.py"
    path.write_text(source)
    result = bnlint(path.name, "--fix")
    assert path.read_text() == source
    assert result.exit_code == 0, result.output


def test_bundled_fixture_is_fixed_in_a_copy_and_builds_the_same_model(project):
    fixture = FIXTURES / "vgg.py"
    pristine = fixture.read_bytes()
    path = project / "vgg.py"
    path.write_bytes(pristine)
    result = bnlint(path.name, "--fix")
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


def test_files_outside_the_working_directory_are_not_edited(tmp_path, monkeypatch):
    elsewhere = tmp_path / "lib"
    elsewhere.mkdir()
    path = elsewhere / "vgg.py"
    path.write_text((FIXTURES / "vgg.py").read_text())
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    result = bnlint(path, "--fix")
    assert path.read_text() == (FIXTURES / "vgg.py").read_text()
    assert "outside the working directory" in result.stderr


def test_text_output_counts_what_fix_can_do(project):
    path = project / "small.py"
    path.write_text((FIXTURES / "vgg.py").read_text() + (FIXTURES / "act_before_bn.py").read_text())
    result = bnlint(path.name)
    assert " BN001 [*] " in result.stdout
    assert "BN002 [*]" not in result.stdout
    assert ("[*] 1 fixable with `--fix`; 4 more with `--fix --unsafe-fixes`"
            in result.stdout)
    fixed = bnlint(path.name, "--fix")
    assert "(1 fixed, 5 remaining" in fixed.stdout
    assert "4 more fixes with --unsafe-fixes" in fixed.stderr


def test_unsafe_fixes_alone_is_a_usage_error(project):
    result = bnlint("model.py", "--unsafe-fixes")
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
    result = bnlint(path.name, "--fix")
    assert path.read_text() == source
    assert ("two.py:5:12: BN001 not fixed in the source: the same call also builds `conv` "
            "(in two.py:B()), where its bias is not dead") in result.stderr
    assert result.exit_code == 1


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
