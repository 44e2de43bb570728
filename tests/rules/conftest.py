"""Tests by rule: each ``<CODE>/<case>.py`` below this folder is a test of rule CODE; the
rule's other tests are ``<CODE>/test_*.py`` beside its cases.

A case is a file as users write it: a model file for a rule that checks models, a script for a
rule that reads scripts. It is checked with `bnlint --select CODE`:

* ``# expect: CODE`` at the end of a line says that a finding points at that line
  (``# expect: CODE, CODE`` for two); a case without such a comment must be clean, so a
  suppressed finding is a case with its ``# bnlint: ignore[CODE]`` and no expectation;
* where the rule has a fix, ``<case>.fixed.py`` is what `bnlint --fix` (with --unsafe-fixes for
  an unsafe fix) makes of the case (comments and all: it keeps the case's ``# expect:``), and
  a case without one must come out of --fix unchanged.

A folder for a new rule is collected as it is; a folder that names no registered rule is an
error. (This folder is a package so that this file does not shadow ``tests/conftest.py``; a
rule's test modules are named after it, ``test_bn001*.py``, so that no two share a name.)
"""

from __future__ import annotations

import io
import json
import re
import tempfile
import tokenize
from pathlib import Path

import pytest

from bnlint.rules import RULES, Safety, Scope
from conftest import run_bnlint

HERE = Path(__file__).parent
FIXED = ".fixed.py"
EXPECT = re.compile(r"#\s*expect:\s*([A-Z]+[0-9]+(?:\s*,\s*[A-Z]+[0-9]+)*)")


def pytest_collect_file(file_path: Path, parent):
    if (file_path.suffix == ".py" and file_path.parent.parent == HERE
            and not file_path.name.startswith("test_")):
        return CaseFile.from_parent(parent, path=file_path)
    return None


def expected_findings(text: str) -> list[tuple[int, str]]:
    """(line, code) of every ``# expect:`` comment (a comment, not text in a string)."""
    found = []
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        match = EXPECT.search(token.string) if token.type == tokenize.COMMENT else None
        if match:
            found += [(token.start[0], code) for code in re.split(r"\s*,\s*", match[1])]
    return found


class CaseFile(pytest.File):
    def collect(self):
        code = self.path.parent.name
        if code not in RULES:
            raise self.CollectError(f"{code}/ names no registered rule (known: {', '.join(RULES)})")
        if self.path.name.endswith(FIXED):
            if not self.path.with_name(self.path.name.removesuffix(FIXED) + ".py").exists():
                raise self.CollectError(f"{self.path.name} is the output of --fix for a case "
                                        "that does not exist")
            return
        yield Findings.from_parent(self, name="findings", code=code)
        if RULES[code].fix:
            yield Fix.from_parent(self, name="fix", code=code)


class Case(pytest.Item):
    def __init__(self, *, code: str, **kwargs):
        super().__init__(**kwargs)
        self.code = code

    def run(self, *options: str) -> tuple[str, object]:
        """bnlint on a copy of the case, in a folder of its own; the copy's text afterwards and
        click's Result."""
        with tempfile.TemporaryDirectory() as folder:
            copy = Path(folder) / self.path.name
            copy.write_bytes(self.path.read_bytes())
            result = run_bnlint(copy.name, "--select", self.code, *options, cwd=folder)
            return copy.read_text(encoding="utf-8"), result

    def repr_failure(self, excinfo, style=None):
        """A failed expectation as pytest explains it, without the runner's frames."""
        if excinfo.errisinstance(AssertionError):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style)

    def reportinfo(self):
        return self.path, None, f"{self.code} case {self.path.name}: {self.name}"


class Findings(Case):
    def runtest(self):
        text = self.path.read_text(encoding="utf-8")
        lines = text.splitlines()
        expected = expected_findings(text)
        strays = sorted({code for _, code in expected} - {self.code})
        assert not strays, f"a case of {self.code} checks only {self.code}, not {strays}"
        _, result = self.run("--format", "json")
        report = json.loads(result.stdout)
        assert report["summary"]["models_failed"] == 0, result.output
        if RULES[self.code].scope == Scope.GRAPH:
            assert report["summary"]["models_analysed"] >= 1, result.output
        found = [(f["line"], f["code"]) for f in report["findings"]]

        def shown(pairs):
            return sorted((line or 0, code, lines[line - 1].strip() if line else "")
                          for line, code in pairs)

        assert shown(found) == shown(expected), "found (left) and `# expect:` (right) differ"


class Fix(Case):
    def runtest(self):
        fixed_path = self.path.with_name(self.path.stem + FIXED)
        wanted = (fixed_path if fixed_path.exists() else self.path).read_text(encoding="utf-8")
        unsafe = ["--unsafe-fixes"] if RULES[self.code].fix == Safety.UNSAFE else []
        fixed, result = self.run("--fix", *unsafe)
        assert result.exit_code != 2, result.output
        assert fixed == wanted, f"--fix gave (left), {fixed_path.name if fixed_path.exists() else 'unchanged'} (right)"
