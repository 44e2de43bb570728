"""BN003: inference (under ``torch.no_grad()``, or an export or trace) on a model that may
still be in training mode. The analysis of the script is in ``eval_mode``."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from bnlint.edits import Edit
from bnlint.findings import Finding
from bnlint.rules import eval_mode

CODE = eval_mode.BN003


def check(path: Path, text: str, tree: ast.Module) -> Iterator[Finding]:
    return eval_mode.findings(path, text, CODE)


def fix(path: Path, text: str, tree: ast.Module) -> Iterator[Edit]:
    return eval_mode.edits(path, text, CODE)
