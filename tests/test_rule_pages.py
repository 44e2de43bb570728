"""Every rule's page (`bnlint --explain CODE`, ``bnlint/rules/<CODE>.md``) shows code that
bnlint checks as shown.

Its Example and Use instead blocks are complete files. Checked with the default rules plus that
rule, the Example raises that rule and nothing else, and Use instead raises nothing. Where the
rule has a fix, `--diff` of the Example (with --unsafe-fixes for an unsafe fix) gives Use
instead; where it gives something else, the Fix safety section says why, naming Use instead,
and the fixed code no longer raises the rule. A new rule's page is checked as it is registered.
"""

import json
import re

import pytest

from bnlint.edits import unified_diff
from bnlint.rules import RULES, Safety, Scope, enabled_codes
from conftest import run_bnlint

SECTIONS = ("What it does", "Why is this bad?", "Example", "Use instead", "Fix safety")
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)
FIXABLE = [code for code, rule in RULES.items() if rule.fix]


def sections(code: str) -> dict[str, str]:
    """The page's text under each ``## `` heading."""
    parts = re.split(r"^## (.+)\n", RULES[code].explanation, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def block(code: str, heading: str) -> str:
    blocks = PYTHON_BLOCK.findall(sections(code)[heading])
    assert len(blocks) == 1, f"{code}.md: `## {heading}` should hold one ```python block"
    return blocks[0]


def selection(code: str) -> str:
    return ",".join(sorted(enabled_codes() | {code}))


def lint(path, code: str) -> list[str]:
    """The codes bnlint reports on ``path`` (a file or folder) with the default rules plus
    ``code``; every model in it must load, and a model rule needs a model to check."""
    result = run_bnlint(path.name, "--select", selection(code), "--format", "json",
                        cwd=path.parent)
    report = json.loads(result.stdout)
    summary = report["summary"]
    assert summary["models_failed"] == 0, result.output
    if RULES[code].scope == Scope.GRAPH:
        assert summary["models_analysed"] >= 1, result.output
    codes = [finding["code"] for finding in report["findings"]]
    assert result.exit_code == (1 if codes else 0), result.output
    return codes


def write(folder, name: str, text: str):
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("code", RULES)
def test_page_has_the_sections_in_order(code):
    assert tuple(sections(code)) == SECTIONS


@pytest.mark.parametrize("code", RULES)
def test_example_raises_the_rule_and_nothing_else(code, tmp_path):
    codes = lint(write(tmp_path, f"{code.lower()}_example.py", block(code, "Example")), code)
    assert codes and set(codes) == {code}


@pytest.mark.parametrize("code", RULES)
def test_use_instead_raises_nothing(code, tmp_path):
    assert lint(write(tmp_path, f"{code.lower()}_use_instead.py", block(code, "Use instead")),
                code) == []


@pytest.mark.parametrize("code", FIXABLE)
def test_fix_of_the_example_gives_use_instead(code, tmp_path):
    example, wanted = block(code, "Example"), block(code, "Use instead")
    path = write(tmp_path, f"{code.lower()}_example.py", example)
    unsafe = ["--unsafe-fixes"] * (RULES[code].fix == Safety.UNSAFE)
    options = ["--select", selection(code), *unsafe]
    diff = run_bnlint(path.name, "--diff", *options, cwd=tmp_path).stdout
    if diff == unified_diff(path.name, example, wanted):
        return
    assert "Use instead" in sections(code)["Fix safety"], (
        f"--diff of the Example does not give Use instead, and Fix safety does not say why:\n"
        f"{diff}")
    if diff:
        run_bnlint(path.name, "--fix", *options, cwd=tmp_path)
        fixed = path.read_text(encoding="utf-8")
        assert diff == unified_diff(path.name, example, fixed)
        assert code not in lint(write(tmp_path, f"{code.lower()}_fixed.py", fixed), code)
    else:  # no source edit: the fixed model, as --save-fixed writes it
        assert RULES[code].scope == Scope.GRAPH, "a script rule's fix is an edit of the script"
        run_bnlint(path.name, "--save-fixed", "saved", *options, cwd=tmp_path)
        (saved,) = (tmp_path / "saved").iterdir()
        assert code not in lint(saved, code)
