"""BN004: a training step on a model that may still be in eval mode, because an evaluation
earlier in the loop switched it and nothing switched it back. The analysis is in ``eval_mode``."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from bnlint.edits import Edit
from bnlint.findings import Finding
from bnlint.rules import eval_mode

CODE = eval_mode.BN004


def check(path: Path, text: str, tree: ast.Module) -> Iterator[Finding]:
    return eval_mode.findings(path, text, CODE)


def fix(path: Path, text: str, tree: ast.Module) -> Iterator[Edit]:
    return eval_mode.edits(path, text, CODE)
