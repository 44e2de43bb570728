"""BN009: BatchNorm layers whose parameters are frozen, put in training mode for training.
The analysis of the script is in ``modes``; this module says when a frozen part of a trained
model is a problem, and in what words."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from bnlint.findings import Hit
from bnlint.rules.modes import verify
from bnlint.rules.modes.events import TRAINING_STEP, Part, Problem, Text, Use
from bnlint.rules.modes.state import TRAIN, Fact
from bnlint.files import display_path

CODE = "BN009"
EVENT = TRAINING_STEP


def problem(use: Use) -> Problem | None:
    """A training step of a model holding a part that holds BatchNorm, whose parameters are
    frozen, and which is surely in training mode: set by a ``.train()`` (the finding points
    at it) or built and never switched (the finding points at the step)."""
    for part in use.parts:
        if part.batchnorm is not True or not part.facts or any(
                f.mode != TRAIN for f in part.facts):
            continue
        switches = [f for f in part.facts if not f.built]
        if not switches:
            return _problem(use, part, None)
        return _problem(use, part, max(switches, key=lambda f: (f.file is None, f.line)))
    return None


def _problem(use: Use, part: Part, switch: Fact | None) -> Problem:
    text = use.place.text
    if part.name:
        name = f"`{part.name}`"
    elif use.shown and part.kind:
        name = f"A part of `{use.shown}` (`{part.kind}`)"
    else:
        name = "A part of the model"
    frozen_line, helper = part.frozen
    frozen = (f"by `{helper}()` called at {text.line(frozen_line)}" if helper
              else f"at {text.line(frozen_line)}")
    step = f"the training step at {text.line(use.line)}"
    if use.callee:
        step += f" (in `{use.callee[0]}()` of {display_path(use.callee[1])})"
    if switch is None:
        line, col = use.line, use.col
        cause = f"it is still in training mode, as every new module is, at {step}"
        advice = (f"Call `{part.name}.eval()` before training" if part.name
                  else "Call `.eval()` on it before training")
    else:
        if switch.file is not None and switch.via:
            line, col = switch.via[1], _column(text, switch.via[1], switch.via[0])
        else:
            line, col = switch.line, _column(text, switch.line, "train")
        where = switch.describe(text.line).removeprefix("set by ") + ("," if switch.via else "")
        cause = f"{where} puts it in training mode for " + (
            step if line != use.line else "its training step")
        advice = f"Call `{part.name}.eval()` after it" if part.name else \
            "Call `.eval()` on that part after it"
    message = (f"{name} holds BatchNorm and its parameters are frozen ({frozen}), but {cause}:"
               " its BatchNorm layers keep updating their running statistics from every batch"
               f" while their weights stay fixed. {advice} (or `bnlint.freeze_batchnorm()` it"
               " once, which keeps its BatchNorm layers in eval mode).")
    return Problem(CODE, line, col, message, (part.name,) if part.name else (), ())


def _column(text: Text, line: int, name: str) -> int:
    """The 1-based column, in characters, of the call of ``name`` (a method or function) on
    ``line``."""
    for node in ast.walk(text.tree):
        if isinstance(node, ast.Call) and node.lineno == line and (
                isinstance(node.func, ast.Attribute) and node.func.attr == name
                or isinstance(node.func, ast.Name) and node.func.id == name):
            return len(text.lines[line - 1].encode()[:node.col_offset].decode()) + 1
    return 1


def check(path: Path, text: str, tree: ast.Module) -> Iterator[Hit]:
    return verify.hits(path, text, tree, CODE)
