"""The steps docs/architecture.md gives for adding a rule are all it takes: a copy of bnlint
gets a small rule by exactly those steps (a registry entry, a page, a module with check, fix
and source_fix), and the command line then finds it, explains it, lets a comment silence it,
and fixes it in the graph and in the user's source."""

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT

# step 1: one entry in the registry, bnlint/rules/__init__.py
ENTRY = '''\
        Rule(
            code="BN990",
            name="tiny-eps",
            summary="BatchNorm eps too small to keep its division stable",
            scope=Scope.GRAPH,
            impl="bnlint.rules.tiny_eps",
            fix=Safety.UNSAFE,
        ),
'''

# step 2: its page, bnlint/rules/<CODE>.md
PAGE = '''\
## What it does
Finds a BatchNorm whose `eps` is below 1e-7.

## Why is this bad?
A channel whose variance is near zero is divided by almost nothing.

## Example
```python
from torch import nn

block = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8, eps=1e-9))
```

## Use instead
```python
from torch import nn

block = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8, eps=1e-5))
```
'''

# step 3: its module, with detection, the graph fix and the source fix side by side
MODULE = '''\
"""BN990: a BatchNorm whose eps is too small to keep its division stable."""

from bnlint import graph
from bnlint.edits import Edit, span_of
from bnlint.findings import Hit
from bnlint.rules import Safety
from bnlint.rules.source_fixes import SourceFix, call_at

CODE = "BN990"
STATE_ONLY = True  # the fix sets a module's eps and leaves the graph as it is


def check(gm, prefix=""):
    for node in gm.graph.nodes:
        bn = graph.module_of(gm, node)
        if hasattr(bn, "running_var") and bn.eps < 1e-7:
            yield Hit(code=CODE, message=f"{graph.label(gm, node, prefix)} has eps={bn.eps:g}.",
                      module=graph.describe(gm, node, prefix), related=(), anchor=node,
                      fix=Safety.UNSAFE)


def fix(gm, hit):
    gm.get_submodule(hit.anchor.target).eps = 1e-5


class _SourceFix(SourceFix):
    kept = "its eps is right"

    def edits(self, fixer, group, path, lines, tree):
        call = call_at(tree, group.where)
        eps = next((k.value for k in call.keywords if k.arg == "eps"), None) if call else None
        if eps is None:
            return "the call passes no `eps=`"
        return [Edit(path, *span_of(eps, lines), "1e-5", CODE, Safety.UNSAFE, "eps=1e-5")]


source_fix = _SourceFix()
'''

MODEL = '''\
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, bias=False),
            nn.BatchNorm2d(8, eps=1e-9),{comment}
            nn.ReLU(),
        )

    def forward(self, x):
        return self.body(x)
'''
LINE = 9  # the BatchNorm's line in MODEL


@pytest.fixture(scope="module")
def extended(tmp_path_factory):
    """A copy of bnlint with the rule added by the documented steps."""
    lib = tmp_path_factory.mktemp("lib")
    rules = shutil.copytree(ROOT / "bnlint", lib / "bnlint",
                            ignore=shutil.ignore_patterns("__pycache__")) / "rules"
    registry = (rules / "__init__.py").read_text(encoding="utf-8")
    end = "        ),\n    )\n}\n"  # the end of the last entry, of the tuple and of RULES
    assert registry.count(end) == 1
    (rules / "__init__.py").write_text(registry.replace(end, f"        ),\n{ENTRY}    )\n}}\n"),
                                       encoding="utf-8")
    (rules / "BN990.md").write_text(PAGE, encoding="utf-8")
    (rules / "tiny_eps.py").write_text(MODULE, encoding="utf-8")
    return lib


def run(lib, folder, *args):
    env = {**os.environ, "PYTHONPATH": str(lib), "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "bnlint", *args], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=300)


def test_list_rules_and_explain_show_the_new_rule(extended, tmp_path):
    listed = run(extended, tmp_path, "--list-rules")
    assert listed.returncode == 0, listed.stderr
    assert "BN990  tiny-eps" in listed.stdout and "unsafe" in listed.stdout.splitlines()[-1]
    explained = run(extended, tmp_path, "--explain", "BN990")
    assert explained.returncode == 0, explained.stderr
    assert explained.stdout.startswith("BN990 (tiny-eps): BatchNorm eps too small")
    assert "Finds a BatchNorm whose `eps` is below 1e-7." in explained.stdout


def test_check_finds_it_and_a_comment_silences_it(extended, tmp_path):
    (tmp_path / "net.py").write_text(MODEL.format(comment=""))
    found = run(extended, tmp_path, "net.py", "--select", "BN990", "--format", "concise")
    assert found.returncode == 1, found.stderr
    assert f"net.py:{LINE}:13: BN990 BatchNorm2d `body.1` has eps=1e-09." in found.stdout
    (tmp_path / "net.py").write_text(MODEL.format(comment="  # bnlint: ignore[BN990]"))
    quiet = run(extended, tmp_path, "net.py", "--select", "BN990", "--format", "concise")
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
    assert "BN990" not in quiet.stdout


def test_diff_shows_and_fix_makes_its_source_edit(extended, tmp_path):
    path = tmp_path / "net.py"
    path.write_text(MODEL.format(comment=""))
    diff = run(extended, tmp_path, "net.py", "--select", "BN990", "--diff", "--unsafe-fixes")
    assert diff.returncode == 1, diff.stderr
    assert textwrap.dedent("""\
        -            nn.BatchNorm2d(8, eps=1e-9),
        +            nn.BatchNorm2d(8, eps=1e-5),
        """) in diff.stdout
    assert path.read_text() == MODEL.format(comment="")
    fixed = run(extended, tmp_path, "net.py", "--select", "BN990", "--fix", "--unsafe-fixes")
    assert fixed.returncode == 1, fixed.stderr  # --fix changed a file
    assert path.read_text() == MODEL.format(comment="").replace("eps=1e-9", "eps=1e-5")
    again = run(extended, tmp_path, "net.py", "--select", "BN990")
    assert again.returncode == 0, again.stdout + again.stderr
