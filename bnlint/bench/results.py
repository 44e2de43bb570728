"""What a benchmark is set to do and what it found: its defaults, the plan told before the
training starts, and the report. Plain data, without torch, so the command line can show its
defaults and the renderers can read a report without loading it.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Protocol

# the defaults of ``bnlint --bench`` and of ``bnlint.benchmark``; ``steps`` None: as many as
# the models' compute allows (``COMPUTE_PER_SEED``), the same on every machine
DEFAULTS = {"steps": None, "seeds": 3, "lr": 0.02, "time_budget": None}
COMPUTE_PER_SEED = 2e11    # FLOPs of both models' training steps in one seed, by default
MIN_STEPS, MAX_STEPS = 20, 200  # the range of the default number of steps

CLASSIFICATION, REGRESSION = "classification", "regression"
SYNTHETIC = "synthetic"


class BenchError(Exception):
    """A benchmark that cannot run as asked: one line for the user, the traceback (if any)
    for --verbose."""

    def __init__(self, message: str, detail: str | None = None):
        super().__init__(message)
        self.detail = detail


@dataclass
class Plan:
    """What a benchmark is about to train, told before the training starts."""

    steps: int                      # steps of each run
    planned: int                    # the steps before a time budget cut them
    seeds: int
    lr_sweep: bool
    seconds: float                  # estimated training time, from the time of the first steps


class Progress(Protocol):
    """Whoever watches a benchmark: told the plan once, then every training step."""

    def plan(self, plan: Plan) -> None: ...

    def step(self, label: str, done: int, total: int) -> None: ...


@dataclass
class Task:
    """What the models are trained on."""

    kind: str                       # CLASSIFICATION or REGRESSION
    input_shape: tuple[int, ...]    # one sample, without the batch dimension
    output_shape: tuple[int, ...]   # likewise
    shape_from: str                 # how the input shape was found: "from INPUT_SHAPE", ...
    data: str                       # SYNTHETIC, or where the user's data came from
    classes: int | None = None      # how many classes the labels use

    def describe(self) -> str:
        what = (f"{self.kind}, {self.classes} classes" if self.kind == CLASSIFICATION
                else f"{self.kind} to {_shape(self.output_shape)} targets")
        what = f"synthetic {what}" if self.data == SYNTHETIC else f"{what} on {self.data}"
        return f"{what}; input {_shape(self.input_shape)} {self.shape_from}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "input_shape": list(self.input_shape),
                "output_shape": list(self.output_shape), "shape_from": self.shape_from,
                "data": self.data, "classes": self.classes}


@dataclass
class Run:
    """One variant trained from one seed."""

    seed: int
    losses: list[float]             # training loss at every step, up to a divergence
    diverged: bool
    step_ms: float                  # median time of a training step
    final: float = math.inf         # mean loss over the last steps (inf when diverged)
    steps_to_target: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "losses": self.losses,
                "diverged": self.diverged, "step_ms": self.step_ms,
                "final_loss": _finite(self.final), "steps_to_target": self.steps_to_target}


@dataclass
class SweepPoint:
    """One learning rate of the sweep: the final loss it reached and whether it trained."""

    lr: float
    final: float
    trains: bool

    def to_dict(self) -> dict[str, Any]:
        return {"lr": self.lr, "final_loss": _finite(self.final), "trains": self.trains}


@dataclass
class Variant:
    name: str
    params: int
    runs: list[Run] = field(default_factory=list)
    max_stable_lr: float | None = None
    sweep: list[SweepPoint] = field(default_factory=list)

    @property
    def finals(self) -> list[float]:
        return [r.final for r in self.runs]

    @property
    def final_mean(self) -> float:
        return statistics.fmean(self.finals) if all(map(math.isfinite, self.finals)) else math.inf

    @property
    def final_std(self) -> float:
        finite = [f for f in self.finals if math.isfinite(f)]
        return statistics.stdev(finite) if len(finite) > 1 else 0.0

    @property
    def steps_mean(self) -> float | None:
        steps = [r.steps_to_target for r in self.runs]
        return statistics.fmean(steps) if steps and None not in steps else None

    @property
    def step_ms(self) -> float:
        return statistics.median(r.step_ms for r in self.runs)

    def mean_curve(self) -> list[float]:
        """The loss at each step averaged over seeds (as long as the shortest run)."""
        length = min(len(r.losses) for r in self.runs)
        return [statistics.fmean(r.losses[i] for r in self.runs) for i in range(length)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "params": self.params,
            "final_loss": {"mean": _finite(self.final_mean), "std": self.final_std},
            "steps_to_target": self.steps_mean,
            "step_ms": self.step_ms,
            "max_stable_lr": self.max_stable_lr,
            "lr_sweep": [p.to_dict() for p in self.sweep],
            "runs": [r.to_dict() for r in self.runs],
        }


@dataclass
class BenchReport:
    task: Task
    original: Variant
    fixed: Variant
    verdict: str
    ratio: float                    # geometric mean over seeds of fixed / original final loss
    rule: str                       # the statistical rule that decided the verdict, in words
    target: str                     # how the target loss of "steps to target" is chosen
    settings: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    # the time budget stopped the runs short of settings["steps_planned"]: the verdict is
    # about fewer steps than asked for
    cut_by_time: bool = False

    @property
    def variants(self) -> tuple[Variant, Variant]:
        return self.original, self.fixed

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "cut_by_time": self.cut_by_time,
            "final_loss_ratio": _finite(self.ratio),
            "rule": self.rule,
            "target": self.target,
            "task": self.task.to_dict(),
            "settings": self.settings,
            "variants": {v.name: v.to_dict() for v in self.variants},
            "notes": self.notes,
        }


@dataclass
class BenchEntry:
    """One model of a ``bnlint --bench`` run: the fixes tried on it and the benchmark (or why
    there is none)."""

    spec: str
    applied: list = field(default_factory=list)     # bnlint.autofix.FixEntry
    skipped: list = field(default_factory=list)
    report: BenchReport | None = None
    error: str | None = None
    detail: str | None = None                        # the traceback behind an error

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.spec,
            "fixes": [{"code": f.code, "module": f.module} for f in self.applied],
            "skipped_fixes": [{"code": f.code, "module": f.module, "reason": f.reason}
                              for f in self.skipped],
            "benchmark": None if self.report is None else self.report.to_dict(),
            "error": self.error,
        }


def _finite(value: float) -> float | None:
    """JSON has no infinity: a diverged loss is ``null``."""
    return value if math.isfinite(value) else None


def _shape(shape: tuple[int, ...]) -> str:
    return str(tuple(shape))
