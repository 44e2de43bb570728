"""BN010: a gradient penalty on a critic that holds BatchNorm. The analysis of the script is
in ``modes``; this module says when a gradient penalty is a problem, and in what words."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from bnlint.findings import Hit
from bnlint.rules.modes import verify
from bnlint.rules.modes.events import GRADIENT_PENALTY, Problem, Use
from bnlint.files import display_path

CODE = "BN010"
EVENT = GRADIENT_PENALTY


def problem(use: Use) -> Problem | None:
    """``torch.autograd.grad`` of the output of a model that holds BatchNorm, with
    ``create_graph=True``: a penalty on the gradient of each sample's score."""
    critic = next((part for part in use.parts if part.batchnorm is True), None)
    if critic is None:
        return None
    if critic.kind:
        subject = f"the output of `{critic.kind}`"
        if critic.name:
            subject += f" (`{critic.name}`)"
    else:
        subject = f"the output of `{critic.name}`" if critic.name else "a model's output"
    where = ""
    if use.callee:
        where = f" (in `{use.callee[0]}()` of {display_path(use.callee[1])})"
    message = (f"Gradient penalty on {subject}, which holds BatchNorm{where}: the penalty "
               "is defined per sample, but BatchNorm makes each sample's score, and so its "
               "gradient, depend on the rest of the batch. Use LayerNorm, InstanceNorm or no "
               "normalisation in the critic.")
    return Problem(CODE, use.line, use.col, message, (critic.kind,) if critic.kind else (), ())


def check(path: Path, text: str, tree: ast.Module) -> Iterator[Hit]:
    return verify.hits(path, text, tree, CODE)
