"""What a benchmark is set to do and what it found: its defaults, the plan told before the
training starts, and the report. Plain data, without torch, so the command line can show its
defaults and the renderers can read a report without loading it.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Protocol

from bnlint.bench.verdict import TRAINS

# the defaults of ``bnlint --bench`` and of ``bnlint.benchmark``; ``steps`` None: as many as
# the models' compute allows (``COMPUTE_PER_SEED``), the same on every machine; ``lr`` None:
# picked by a range test on the original model
DEFAULTS = {"steps": None, "seeds": 3, "lr": None, "time_budget": None}
QUICK_SEEDS = 2            # --quick: seeds, and the share of the default steps it trains
QUICK_SHARE = 0.5
COMPUTE_PER_SEED = 2e11    # FLOPs of both models' training steps in one seed, by default
MIN_STEPS, MAX_STEPS = 20, 200  # the range of the default number of steps
QUICK_MIN_STEPS = 10

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
    range_test: bool = False        # the learning rate is picked by a range test first
    init_scales: tuple[float, ...] = ()


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
    laps: list[float] = field(default_factory=list, repr=False)  # seconds of each step
    final: float = math.inf         # mean loss over the last steps (inf when diverged)
    status: str = ""                # TRAINS, verdict.NOT_TRAINING or verdict.DIVERGED
    steps_to_target: int | None = None
    seconds_to_target: float | None = None  # wall-clock time of those steps
    heldout: Heldout | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "losses": self.losses, "status": self.status,
                "diverged": self.diverged, "step_ms": self.step_ms,
                "final_loss": _finite(self.final), "steps_to_target": self.steps_to_target,
                "seconds_to_target": self.seconds_to_target,
                "heldout": None if self.heldout is None else self.heldout.to_dict()}


@dataclass
class Heldout:
    """A trained model on samples it never trained on, in eval mode (running statistics)."""

    loss: float
    accuracy: float | None          # classification only
    samples: int

    def to_dict(self) -> dict[str, Any]:
        return {"loss": _finite(self.loss), "accuracy": self.accuracy}


@dataclass
class ScaledInit:
    """One variant trained (seed 0) from its starting weights scaled by ``scale``."""

    scale: float
    final: float
    status: str

    def to_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "final_loss": _finite(self.final), "status": self.status,
                "trains": self.status == TRAINS}


@dataclass
class SweepPoint:
    """One learning rate of the sweep: the final loss of each seed and whether it trained
    (in every seed)."""

    lr: float
    finals: list[float]
    trains: bool

    def to_dict(self) -> dict[str, Any]:
        return {"lr": self.lr, "final_losses": [_finite(f) for f in self.finals],
                "trains": self.trains}


@dataclass
class Variant:
    name: str
    params: int
    runs: list[Run] = field(default_factory=list)
    max_stable_lr: float | None = None
    sweep: list[SweepPoint] = field(default_factory=list)
    init_scales: list[ScaledInit] = field(default_factory=list)

    @property
    def finals(self) -> list[float]:
        return [r.final for r in self.runs]

    @property
    def trained(self) -> bool:
        """Every run trained: only then are its losses averaged and compared."""
        return bool(self.runs) and all(r.status == TRAINS for r in self.runs)

    @property
    def final_mean(self) -> float:
        return statistics.fmean(self.finals) if self.trained else math.inf

    @property
    def final_std(self) -> float:
        finite = [f for f in self.finals if math.isfinite(f)]
        return statistics.stdev(finite) if len(finite) > 1 else 0.0

    @property
    def steps_mean(self) -> float | None:
        steps = [r.steps_to_target for r in self.runs]
        return statistics.fmean(steps) if steps and None not in steps else None

    @property
    def seconds_mean(self) -> float | None:
        seconds = [r.seconds_to_target for r in self.runs]
        return statistics.fmean(seconds) if seconds and None not in seconds else None

    @property
    def step_ms(self) -> float | None:
        return statistics.median(r.step_ms for r in self.runs) if self.runs else None

    @property
    def heldout(self) -> Heldout | None:
        """The held-out result averaged over the seeds, when every run has one."""
        results = [r.heldout for r in self.runs]
        if not results or None in results:
            return None
        accuracy = [h.accuracy for h in results]
        return Heldout(statistics.fmean(h.loss for h in results),
                       None if None in accuracy else statistics.fmean(accuracy),
                       results[0].samples)

    @property
    def gap(self) -> float | None:
        """Held-out loss (eval mode) minus final training loss, over the seeds: how much worse
        the model does on samples it never saw."""
        heldout = self.heldout
        if heldout is None or not self.trained or not math.isfinite(heldout.loss):
            return None
        return heldout.loss - self.final_mean

    def mean_curve(self) -> list[float]:
        """The loss at each step averaged over seeds (as long as the shortest run)."""
        length = min(len(r.losses) for r in self.runs)
        return [statistics.fmean(r.losses[i] for r in self.runs) for i in range(length)]

    def to_dict(self) -> dict[str, Any]:
        heldout = self.heldout
        return {
            "params": self.params,
            "trained": self.trained,
            "final_loss": {"mean": _finite(self.final_mean), "std": self.final_std},
            "steps_to_target": self.steps_mean,
            "seconds_to_target": self.seconds_mean,
            "step_ms": self.step_ms,
            "heldout": None if heldout is None else heldout.to_dict(),
            "train_eval_gap": self.gap,
            "max_stable_lr": self.max_stable_lr,
            "lr_sweep": [p.to_dict() for p in self.sweep],
            "init_scale": [p.to_dict() for p in self.init_scales],
            "runs": [r.to_dict() for r in self.runs],
        }


@dataclass
class ModeCheck:
    """What a missing ``.eval()`` costs: the share of predictions that change when the same
    samples run in batches of another size and composition, in training and in eval mode."""

    train_mode_changed: float
    eval_mode_changed: float
    samples: int
    rule: str

    def to_dict(self) -> dict[str, Any]:
        return {"train_mode_changed": self.train_mode_changed,
                "eval_mode_changed": self.eval_mode_changed, "samples": self.samples,
                "rule": self.rule}


@dataclass
class Equivalence:
    """The original and the fixed model compared output for output."""

    identical: bool
    inputs: int                     # distinct inputs compared
    max_error: float                # the largest absolute difference of an output
    tolerance: float
    rule: str

    def to_dict(self) -> dict[str, Any]:
        return {"identical": self.identical, "inputs": self.inputs,
                "max_error": _finite(self.max_error), "tolerance": self.tolerance,
                "rule": self.rule}


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
    equivalence: Equivalence | None = None  # outputs compared before any training
    mode_check: ModeCheck | None = None     # on the original, when it holds BatchNorm
    rules: dict[str, str] = field(default_factory=dict)  # each measurement's rule, in words

    @property
    def variants(self) -> tuple[Variant, Variant]:
        return self.original, self.fixed

    @property
    def trained(self) -> bool:
        """Whether the models were trained (not when the fix was verified to give the same
        function)."""
        return bool(self.original.runs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "cut_by_time": self.cut_by_time,
            "final_loss_ratio": _finite(self.ratio),
            "rule": self.rule,
            "target": self.target,
            "rules": self.rules,
            "task": self.task.to_dict(),
            "settings": self.settings,
            "equivalence": None if self.equivalence is None else self.equivalence.to_dict(),
            "variants": {v.name: v.to_dict() for v in self.variants},
            "mode_check": None if self.mode_check is None else self.mode_check.to_dict(),
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
    mode_check: ModeCheck | None = None              # on the original, when it holds BatchNorm

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.spec,
            "fixes": [{"code": f.code, "module": f.module} for f in self.applied],
            "skipped_fixes": [{"code": f.code, "module": f.module, "reason": f.reason}
                              for f in self.skipped],
            "benchmark": None if self.report is None else self.report.to_dict(),
            "mode_check": None if self.mode_check is None else self.mode_check.to_dict(),
            "error": self.error,
        }


def _finite(value: float) -> float | None:
    """JSON has no infinity: a diverged loss is ``null``."""
    return value if math.isfinite(value) else None


def _shape(shape: tuple[int, ...]) -> str:
    return str(tuple(shape))
