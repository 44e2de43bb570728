"""The decision rule: from the paired loss curves to a verdict, and the rule in words.

Plain arithmetic on lists of losses, without torch.
"""

from __future__ import annotations

import math
import statistics

IMPROVED, NEUTRAL, WORSE = "improved", "no measurable difference", "worse"
NEITHER = "neither trains"          # no seed of either model trained: nothing to compare
IDENTICAL = "identical function"    # the outputs match: a safe fix, not trained by default

# what one run did: its loss fell (TRAINS), stayed or rose (NOT_TRAINING), or stopped being
# finite (DIVERGED)
TRAINS, NOT_TRAINING, DIVERGED = "trains", "not training", "diverged"

MIN_EFFECT = 0.05          # a verdict needs the final loss to move by at least this fraction
SOLVED = 0.01              # losses below this fraction of the starting loss count as equal


def window(steps: int) -> int:
    """How many last steps the final loss averages over."""
    return max(1, steps // 10)


def final_loss(losses: list[float], diverged: bool, steps: int) -> float:
    if diverged or not losses:
        return math.inf
    return statistics.fmean(losses[-window(steps):])


def steps_to(losses: list[float], target: float, steps: int) -> int | None:
    """The first step at which the mean loss over the last ``window`` steps is at most
    ``target``."""
    w = window(steps)
    total = 0.0
    for i, value in enumerate(losses):
        total += value
        if i >= w:
            total -= losses[i - w]
        if i >= w - 1 and total / w <= target * (1 + 1e-9):
            return i + 1
    return None


def rule_text(seeds: int, steps: int) -> str:
    return (f"final loss = mean training loss over the last {window(steps)} steps; a run "
            f"'{TRAINS}' when its loss stays finite and its final loss ends at least "
            f"{MIN_EFFECT:.0%} below its first step's, else it is '{NOT_TRAINING}' (or "
            f"'{DIVERGED}', when the loss stopped being finite) and loses to any run that "
            f"trains; '{IMPROVED}' ('{WORSE}') when the fixed model's final loss is lower "
            f"(higher) than the original's in every one of the {seeds} seed"
            f"{'s' * (seeds != 1)} and by at least {MIN_EFFECT:.0%} on the geometric mean of "
            f"the per-seed ratios; losses below {SOLVED:.0%} of the starting loss count as "
            f"equal (both solved); '{NEITHER}' when no run of either model trains; otherwise "
            f"'{NEUTRAL}'")


def target_text(steps: int) -> str:
    return (f"the first step at which the mean loss over the last {window(steps)} steps "
            "reaches the worse variant's final loss (per seed where both train, then "
            "averaged), in steps and in wall-clock seconds of those steps")


def status(losses: list[float], diverged: bool, steps: int) -> str:
    """TRAINS, NOT_TRAINING or DIVERGED: the loss stays finite and falls (``trains``)."""
    if diverged:
        return DIVERGED
    return TRAINS if trains(losses, diverged, steps) else NOT_TRAINING


def _ratio(original: float, fixed: float, floor: float) -> float:
    if not math.isfinite(original) and not math.isfinite(fixed):
        return 1.0
    if not math.isfinite(fixed):
        return math.inf
    if not math.isfinite(original):
        return 0.0
    return max(fixed, floor) / max(original, floor)


def decide(original: list[float], fixed: list[float], start: float) -> tuple[str, float]:
    """(verdict, geometric mean of fixed/original) from the paired per-seed final losses, a
    run that did not train counting as ``inf``; ``start`` is the starting loss, for the "both
    solved" floor."""
    if not any(map(math.isfinite, original + fixed)):
        return NEITHER, math.nan
    floor = SOLVED * start if math.isfinite(start) else 0.0
    ratios = [_ratio(o, f, floor) for o, f in zip(original, fixed)]
    if any(r == math.inf for r in ratios) and any(r == 0.0 for r in ratios):
        ratio = math.nan
    elif any(r == math.inf for r in ratios):
        ratio = math.inf
    elif any(r == 0.0 for r in ratios):
        ratio = 0.0
    else:
        ratio = math.exp(statistics.fmean(math.log(r) for r in ratios))
    if all(r < 1 for r in ratios) and ratio <= 1 - MIN_EFFECT:
        return IMPROVED, ratio
    if all(r > 1 for r in ratios) and ratio >= 1 / (1 - MIN_EFFECT):
        return WORSE, ratio
    return NEUTRAL, ratio


def trains(losses: list[float], diverged: bool, steps: int) -> bool:
    """Finite all along, and at the end at least ``MIN_EFFECT`` below the first step's loss
    (the loss of the starting weights). A learning rate of the sweep counts as stable when
    its run trains."""
    if diverged or len(losses) < steps:
        return False
    return final_loss(losses, diverged, steps) < (1 - MIN_EFFECT) * losses[0]
