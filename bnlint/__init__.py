"""bnlint: find and fix BatchNorm mistakes in PyTorch models.

The public API is ``check``, ``fix``, ``fold``, ``convert_checkpoint``, ``benchmark``,
``guard``, ``freeze_batchnorm``, ``Finding``, ``Report`` and ``Example`` (a forward's input for
``check(model, example=...)``: positional arguments, keyword arguments, and where they came
from). Importing bnlint does not import torch; the functions that need it load it on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bnlint.findings import Finding, ModelResult, Report

__version__ = "0.1.0"
__all__ = ["Example", "Finding", "ModelResult", "Report", "benchmark", "check",
           "convert_checkpoint", "fix", "fold", "freeze_batchnorm", "guard", "__version__"]

_LAZY = {"check": "bnlint.engine", "fix": "bnlint.autofix", "guard": "bnlint.mode_guard",
         "benchmark": "bnlint.bench", "Example": "bnlint.inputs",
         "convert_checkpoint": "bnlint.checkpoint", "fold": "bnlint.folding",
         "freeze_batchnorm": "bnlint.mode_guard"}

if TYPE_CHECKING:
    from bnlint.autofix import fix
    from bnlint.bench import benchmark
    from bnlint.checkpoint import convert_checkpoint
    from bnlint.engine import check
    from bnlint.folding import fold
    from bnlint.inputs import Example
    from bnlint.mode_guard import freeze_batchnorm, guard


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'bnlint' has no attribute {name!r}")
