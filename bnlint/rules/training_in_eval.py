"""BN004: a training step on a model that may still be in eval mode, because an evaluation
earlier in the loop switched it and nothing switched it back. The analysis of the script is in
``modes``; this module says when a training step is a problem, in what words, and how to fix
it."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from bnlint.findings import Hit
from bnlint.rules.modes import verify
from bnlint.rules.modes.events import TRAINING_STEP, LineEdit, Problem, Use
from bnlint.rules.modes.state import CALLER, EVAL, TRAIN, UNKNOWN, Fact

CODE = "BN004"
EVENT = TRAINING_STEP


def problem(use: Use) -> Problem | None:
    """A training step in eval mode left by an evaluation: an ``.eval()`` from the previous
    pass of a loop, or one an inference just ran in. A model never in training mode and
    given to no optimiser (a teacher) is in eval mode on purpose."""
    wrong = [f for f in use.facts if f.mode == EVAL and (f.looped or f.inferred)]
    if not wrong or any(f.mode in (UNKNOWN, CALLER) for f in use.facts):
        return None
    if not (any(f.mode == TRAIN for f in use.facts) or use.optimized):
        return None
    line = use.place.text.line
    last = max(wrong, key=lambda f: f.line)
    if last.looped:
        why = f"{last.describe(line)}, on the previous pass of the loop at {line(last.looped)}"
    else:
        why = f"{last.describe(line)}, for the inference at {line(last.inferred)}"
    subject = f"`{use.shown}`" if use.shown else "The model"
    advice = (f"Call `{use.variable}.train()`" if use.variable
              else "Call `.train()` on the model")
    message = (f"{subject} is trained here but may be in eval mode ({why}); BatchNorm would"
               f" use its frozen running statistics. {advice} at the top of the training loop.")
    return Problem(CODE, use.line, use.col, message, (last.via[0],) if last.via else (),
                   fixes(use, last))


def fixes(use: Use, cause: Fact) -> tuple[tuple[LineEdit, ...], ...]:
    """``.train()`` at the top of the loop whose next pass brings eval mode (the epoch loop),
    taking the place of a ``.train()`` right before that loop, which it makes redundant; else
    at the top of the loop holding the step, else right before the step."""
    if not use.variable:
        return ()
    place = use.place
    code = f"{use.variable}.train()"
    loops = [loop for loop in place.loops if loop.lineno == cause.looped] or place.loops[-1:]
    candidates = []
    if loops:
        loop = loops[-1]
        top = place.top(loop.body, code)
        previous = place.text.previous(loop)
        if previous is not None and _is_call(previous, code, place):
            candidates.append((place.remove(previous), top))
        candidates.append((top,))
        if loop is not place.loops[-1]:
            candidates.append((place.top(place.loops[-1].body, code),))
    candidates.append((place.before(place.stmt, code),))
    return tuple(c for c in candidates if all(c))


def _is_call(stmt: ast.stmt, code: str, place) -> bool:
    """Whether a statement is exactly ``code`` (say ``model.train()``)."""
    return (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)
            and ast.unparse(stmt) == code)


def check(path: Path, text: str, tree: ast.Module) -> Iterator[Hit]:
    """Each problem, with its fix (checked on the fixed script) as edits."""
    return verify.hits(path, text, tree, CODE)
