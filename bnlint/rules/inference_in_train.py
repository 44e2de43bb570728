"""BN003: inference (under ``torch.no_grad()``, or an export or trace) on a model that may
still be in training mode. The analysis of the script is in ``modes``; this module says when
an inference is a problem, in what words, and how to fix it."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from bnlint.findings import Hit
from bnlint.rules.modes import verify
from bnlint.rules.modes.events import INFERENCE, LineEdit, Problem, Use
from bnlint.rules.modes.state import CALLER, EVAL, TRAIN, UNKNOWN
from bnlint.rules.modes.vocabulary import SCRIPTING
from bnlint.files import display_path

CODE = "BN003"
EVENT = INFERENCE


def problem(use: Use) -> Problem | None:
    """An inference on a model in training mode: built and never switched, or trained. An
    explicit ``.train()`` that no training step followed is a deliberate pass in training mode
    (re-estimating BatchNorm statistics, exporting a training graph)."""
    train = [f for f in use.facts if f.mode == TRAIN and (f.built or f.trained)]
    if not train or any(f.mode in (UNKNOWN, CALLER) for f in use.facts):
        return None
    line = use.place.text.line
    last = max(train, key=lambda f: f.line)
    why = last.describe(line)
    if any(f.mode == EVAL for f in use.facts):
        why += "; the `.eval()` before this does not run on every path"
    if use.export:
        where = f"is passed to `{use.exporter}`"
        if use.export == SCRIPTING:
            effect = "the scripted module keeps training mode for whoever loads it"
        else:
            effect = "the exported graph keeps BatchNorm in training mode"
    else:
        where = f"runs inference inside {use.grad}"
        effect = "BatchNorm would use batch statistics and overwrite its running averages"
    if use.callee:
        where += f" in `{use.callee[0]}()` of {display_path(use.callee[1])}"
    if use.helper:
        where += f" (in `{use.helper[0]}()`, called at {line(use.helper[1])})"
    subject = f"`{use.shown}`" if use.shown else "The model"
    advice = (f"Call `{use.variable}.eval()` first." if use.variable
              else "Call `.eval()` on the model first.")
    message = f"{subject} {where} but may be in training mode ({why}); {effect}. {advice}"
    return Problem(CODE, use.line, use.col, message, (last.via[0],) if last.via else (),
                   fixes(use))


def fixes(use: Use) -> tuple[tuple[LineEdit, ...], ...]:
    """``.eval()`` before the ``with`` block (or at the top of the decorated function, or
    before the statement), then the same with ``.train()`` after it, for a model trained on."""
    if not use.variable:
        return ()
    place = use.place
    to_eval, to_train = f"{use.variable}.eval()", f"{use.variable}.train()"
    candidates = []
    if place.nograd_with is not None:
        block = place.nograd_with
        candidates += [(place.before(block, to_eval),),
                       (place.before(block, to_eval), place.after(block, to_train))]
    elif place.decorated is not None:
        candidates.append((place.top(list(place.decorated), to_eval),))
    stmt = place.stmt
    candidates += [(place.before(stmt, to_eval),),
                   (place.before(stmt, to_eval), place.after(stmt, to_train))]
    return tuple(c for c in candidates if all(c))


def check(path: Path, text: str, tree: ast.Module) -> Iterator[Hit]:
    """Each problem, with its fix (checked on the fixed script) as edits."""
    return verify.hits(path, text, tree, CODE)
