"""Training: seeded starting weights shared by both models, the SGD loop, the learning-rate
sweep, and how long to train.

How long is decided by the models, never by the clock: by default the number of steps is
what a fixed compute budget allows for the FLOPs of one training step of both models, so the
same models train the same steps, with the same losses, on any machine and under any load. A
time budget exists only when the user gives one; it then cuts the steps of every run alike,
and says before training when it cannot hold.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
import traceback
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bnlint.bench.results import (
    COMPUTE_PER_SEED, MAX_STEPS, MIN_STEPS, BenchError, Progress, ScaledInit, SweepPoint, Variant)
from bnlint.bench.tasks import Batch
from bnlint.bench.verdict import MIN_EFFECT, final_loss, status, trains

SWEEP_SHARE = 0.5          # each run of the sweep, the range test and the init runs is this
LR_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)  # fraction of a full run
SWEEP_DROP = 0.5           # a rate of the sweep trains when every seed's loss falls this share
                           # of the original's drop in the main runs
RANGE = (LR_GRID[0], LR_GRID[-1])  # the range test's learning rates, rising geometrically
RANGE_MIN_STEPS = 30       # over half the steps of a run, and at least this many
RANGE_SMOOTHING = 0.8      # its loss, smoothed (exponential moving average)
RANGE_STOP = 4.0           # it stops once the smoothed loss exceeds this multiple of its lowest
RANGE_BELOW = 3.0          # the picked rate: the one of the lowest smoothed loss divided by this
FALLBACK_LR = 0.01         # when the range test sees the loss fall at no rate
MARGIN = 0.9               # a time budget plans this share of the time it has left
# the kinds of runs: the seeds, the learning-rate sweep, the range test, the scaled inits
SEEDS, SWEEP, RANGE_TEST, INIT = "seeds", "sweep", "range test", "init"


# --- starting weights --------------------------------------------------------------------------

def _reset(model: nn.Module) -> None:
    for module in model.modules():
        if callable(getattr(module, "reset_parameters", None)):
            module.reset_parameters()
        if callable(getattr(module, "reset_running_stats", None)):
            module.reset_running_stats()


def initialise(original: nn.Module, fixed: nn.Module, seed: int) -> tuple[nn.Module, nn.Module]:
    """Copies of both models with fresh, seeded weights (every layer's ``reset_parameters``);
    the fixed copy takes the original's tensor for every name and shape the two share, so
    both start from the same weights, mapped through the fix."""
    torch.manual_seed(seed)
    a = copy.deepcopy(original)
    _reset(a)
    b = copy.deepcopy(fixed)
    _reset(b)
    own = b.state_dict()
    shared = {k: v for k, v in a.state_dict().items() if k in own and own[k].shape == v.shape}
    b.load_state_dict(shared, strict=False)
    return a, b


def weight_mapping(original: nn.Module, fixed: nn.Module) -> dict[str, int]:
    """How the fixed model's starting weights relate to the original's, in tensors: taken
    from the original (``shared``), new with the fix (``added``), dropped by it (``removed``)."""
    theirs = original.state_dict()
    own = fixed.state_dict()
    shared = sum(k in theirs and theirs[k].shape == v.shape for k, v in own.items())
    return {"shared": shared, "added": len(own) - shared, "removed": len(theirs) - shared}


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- the training loop -------------------------------------------------------------------------

def resolve_device(device: str | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise BenchError(f"unknown device {device!r}: {exc}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise BenchError(f"device {device!r} asked for, but CUDA is not available here")
    return resolved


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _failed(step: int, exc: Exception) -> BenchError:
    return BenchError(f"training step {step} failed: {type(exc).__name__}: {exc}",
                      traceback.format_exc())


def _typical(laps: list[float]) -> float:
    return statistics.median(laps[1:][-5:]) if len(laps) > 2 else 0.0


def train(model: nn.Module, batches: Iterator[Batch], *, steps: int, lr: float, momentum: float,
          loss_fn, device: torch.device, seed: int, stop_at: float | None = None,
          on_step: Callable[[], None] | None = None, lrs: list[float] | None = None,
          until: Callable[[list[float]], bool] | None = None,
          ) -> tuple[list[float], bool, float, list[float]]:
    """Train in place with SGD; (loss at each step, diverged, median step time in ms, the
    wall-clock seconds of each step).

    Training stops at the first loss that is not finite (the model has diverged), and, when
    ``stop_at`` is a ``time.perf_counter()`` time, before a step that would end after it (the
    run is cut short; it always makes one step). The step time leaves out the first steps,
    which pay for one-off set-up. ``lrs``: the learning rate of each step, instead of ``lr``;
    ``until``: told the losses after every step, training stops when it says so."""
    torch.manual_seed(seed)
    model.to(device).train()
    optimiser = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr,
                                momentum=momentum)
    losses: list[float] = []
    times: list[float] = []         # the model's step alone
    laps: list[float] = []          # the whole step, batch included: what the clock sees
    diverged = False
    for step in range(steps):
        lap = time.perf_counter()
        # the next step takes about as long as the last few (the first ones pay for set-up)
        if stop_at is not None and step and lap + _typical(laps) > stop_at:
            break
        x, y = next(batches)
        x, y = x.to(device), y.to(device)
        if lrs is not None:
            for group in optimiser.param_groups:
                group["lr"] = lrs[step]
        _sync(device)
        start = time.perf_counter()
        try:
            loss = loss_fn(model(x), y)
            value = loss.item()
            if not math.isfinite(value):
                diverged = True
                break
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        except Exception as exc:  # noqa: BLE001 - the user's forward may raise anything
            raise _failed(step + 1, exc) from None
        _sync(device)
        end = time.perf_counter()
        times.append(end - start)
        laps.append(end - lap)
        losses.append(value)
        if on_step is not None:
            on_step()
        if until is not None and until(losses):
            break
    warm = times[2:] or times or [0.0]
    return losses, diverged, statistics.median(warm) * 1000, laps


def scale_weights(model: nn.Module, factor: float) -> nn.Module:
    """``model`` with every layer weight (each parameter of two or more dimensions) multiplied
    by ``factor``; biases and BatchNorm's affine parameters are left as they are."""
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() >= 2:
                parameter.mul_(factor)
    return model


def step_cost(model: nn.Module, batches: Iterator[Batch], *, loss_fn, lr: float,
              momentum: float, device: torch.device) -> tuple[int, float]:
    """(FLOPs, seconds) of one training step of ``model``, which it trains in place: the FLOPs
    of the forward and backward pass counted on a first step, the seconds the median of the
    next three, batch included."""
    model.to(device).train()
    optimiser = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr,
                                momentum=momentum)

    def step() -> None:
        x, y = next(batches)
        loss = loss_fn(model(x.to(device)), y.to(device))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        _sync(device)

    counter = FlopCounterMode(display=False)
    times = []
    try:
        with counter:
            step()
        for _ in range(3):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
    except Exception as exc:  # noqa: BLE001 - the user's forward may raise anything
        raise _failed(1, exc) from None
    return counter.get_total_flops(), statistics.median(times)


def default_steps(flops: int) -> int:
    """The steps that ``COMPUTE_PER_SEED`` allows for ``flops`` per training step of both
    models, in tens, within ``MIN_STEPS``..``MAX_STEPS``: a count of the models' arithmetic,
    the same on every machine."""
    if flops <= 0:
        return MAX_STEPS
    return max(MIN_STEPS, min(MAX_STEPS, int(COMPUTE_PER_SEED / flops) // 10 * 10))


def sweep_steps(steps: int) -> int:
    """The steps of a run of the sweep, the range test or a scaled init."""
    return max(min(steps, MIN_STEPS), round(steps * SWEEP_SHARE))


def range_steps(steps: int) -> int:
    """The steps of the learning-rate range test."""
    return max(RANGE_MIN_STEPS, sweep_steps(steps))


def seconds_needed(steps: int, seeds: int, lr_sweep: bool, step_seconds, *,
                   range_test: bool = False, init_scales: int = 0) -> float:
    """The expected training time of a benchmark of ``steps`` steps (the sweep tried in full)."""
    short = sweep_steps(steps)
    runs = (seeds * steps + (len(LR_GRID) * seeds * short if lr_sweep else 0)
            + init_scales * short)
    return runs * sum(step_seconds) + range_test * range_steps(steps) * step_seconds[0]


def fit(steps: int, seeds: int, lr_sweep: bool, step_seconds, seconds_left: float,
        budget: float, **extra) -> int:
    """The most steps, up to ``steps``, that fit in the ``seconds_left`` of a ``budget``;
    a ``BenchError`` that says why when not even ``MIN_STEPS`` (or ``steps``, if fewer) fit.
    ``extra``: the range test and scaled inits, as ``seconds_needed`` takes them."""
    room = MARGIN * seconds_left
    floor = min(steps, MIN_STEPS)

    def fits(n: int) -> bool:
        return seconds_needed(n, seeds, lr_sweep, step_seconds, **extra) <= room

    if not fits(floor):
        need = seconds_needed(floor, seeds, lr_sweep, step_seconds, **extra)
        original, fixed = (f"{s * 1000:.3g} ms" for s in step_seconds)
        remedies = ["a larger --time-budget", *["fewer --seeds"] * (seeds > 1),
                    *["no --lr-sweep"] * lr_sweep]
        raise BenchError(
            f"--time-budget {budget:g}s cannot hold: a training step takes about {original} "
            f"for the original and {fixed} for the fixed model here, so {seeds} "
            f"seed{'s' * (seeds != 1)} of {floor} steps"
            f"{' and the learning-rate sweep' if lr_sweep else ''} need about {need:.2g}s "
            f"after {budget - seconds_left:.2g}s of set-up; give {' or '.join(remedies)}")
    lo, hi = floor, steps
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo


class Schedule:
    """The runs still to come: steps done and to do for a progress bar and, under a time
    budget (``deadline``, a ``time.perf_counter()`` time), when each run must stop.

    Each run gets a share of the time left in proportion to its expected length, so a machine
    that slows down part way cuts the runs after it alike, not the last ones alone."""

    def __init__(self, progress: Progress | None, step_seconds, deadline: float | None, *,
                 steps: int, seeds: int, lr_sweep: bool, range_test: bool = False,
                 init_scales: int = 0):
        self.progress, self.step_seconds, self.deadline = progress, step_seconds, deadline
        self.steps = self._steps(steps)
        self.left = {(kind, variant): runs for variant in (0, 1)
                     for kind, runs in ((SEEDS, seeds), (SWEEP, len(LR_GRID) * lr_sweep * seeds),
                                        (INIT, init_scales))}
        self.left[RANGE_TEST, 0] = int(range_test)
        self.done = self.running = self.ran = 0
        self.label = ""

    def seconds(self) -> float:
        """The expected training time of the runs to come."""
        return sum(runs * self.steps[kind] * self.step_seconds[variant]
                   for (kind, variant), runs in self.left.items())

    def start(self, kind: str, variant: int, label: str) -> tuple[int, float | None]:
        """The next run of ``kind`` for ``variant`` (0 the original, 1 the fixed model):
        its steps, and the time by which it must stop (``None`` without a budget)."""
        left = self.seconds()
        steps = self.steps[kind]
        self.left[kind, variant] -= 1
        self.running, self.ran, self.label = steps, 0, label
        if self.deadline is None:
            return steps, None
        share = steps * self.step_seconds[variant] / left if left > 0 else 1.0
        now = time.perf_counter()
        return steps, now + (self.deadline - now) * share

    def step(self) -> None:
        self.done += 1
        self.ran += 1
        self._tell()

    def finish(self) -> None:
        """The run ended: the steps it did not make (diverged, cut) count as done."""
        self.done += self.running - self.ran
        self.running = self.ran = 0
        self._tell()

    @staticmethod
    def _steps(steps: int) -> dict[str, int]:
        short = sweep_steps(steps)
        return {SEEDS: steps, SWEEP: short, RANGE_TEST: range_steps(steps), INIT: short}

    def cut(self, steps: int) -> None:
        """The budget cut a run to ``steps``: the runs to come train no longer."""
        self.steps = self._steps(steps)

    def drop(self, kind: str, variant: int) -> None:
        self.left[kind, variant] = 0
        self._tell()

    def _tell(self) -> None:
        if self.progress is not None:
            total = self.done + sum(runs * self.steps[kind]
                                    for (kind, _), runs in self.left.items())
            self.progress.step(self.label, self.done, total + self.running - self.ran)


# --- the learning rate: a range test, and the sweep ---------------------------------------------

def range_test(model: nn.Module, data, *, steps: int, momentum: float, loss_fn, device,
               schedule: Schedule) -> dict:
    """Pick a learning rate for ``model`` (fresh weights, trained in place): train it one run
    with the rate rising geometrically over ``RANGE``, smooth the loss, and take the rate of
    the lowest smoothed loss divided by ``RANGE_BELOW`` (the rate where the loss falls
    fastest lies below the lowest point, and a rate that high is near the edge; the smoothing
    lags a few steps behind, so the divisor is small). The run
    stops early once the smoothed loss exceeds ``RANGE_STOP`` times its lowest. When the
    smoothed loss never falls below its first value, ``FALLBACK_LR``. Returns what the report
    shows: the rate, why, and the curve."""
    lo, hi = RANGE
    lrs = [lo * (hi / lo) ** (i / max(1, steps - 1)) for i in range(steps)]
    run_steps, stop_at = schedule.start(RANGE_TEST, 0, "original, learning-rate range test")

    def runs_away(losses: list[float]) -> bool:
        smooth = _smoothed(losses)
        return smooth[-1] > RANGE_STOP * min(smooth)

    losses, _, _, _ = train(model, data.batches(), steps=run_steps, lr=lrs[0],
                            momentum=momentum, loss_fn=loss_fn, device=device, seed=0,
                            stop_at=stop_at, on_step=schedule.step, lrs=lrs, until=runs_away)
    schedule.finish()
    smooth = _smoothed(losses)
    best = min(range(len(smooth)), key=smooth.__getitem__) if smooth else 0
    rule = (f"a range test on the original: {len(losses)} steps (of {steps} planned) from "
            f"fresh weights, seed 0, the learning rate rising from {lo:g} to {hi:g}; the loss "
            f"smoothed (moving average, {RANGE_SMOOTHING:g}); stopped once it passes "
            f"{RANGE_STOP:g}× its lowest")
    if not smooth or smooth[best] >= (1 - MIN_EFFECT) * smooth[0] or best == 0:
        return {"lr": FALLBACK_LR, "why": f"the range test saw the original's loss fall at no "
                f"rate from {lo:g} to {hi:g}, so {FALLBACK_LR:g}, the fallback", "rule": rule,
                "lrs": lrs[:len(losses)], "losses": losses}
    lr = float(f"{lrs[best] / RANGE_BELOW:.2g}")
    return {"lr": lr, "why": f"the smoothed loss of a range test on the original was lowest at "
            f"lr {lrs[best]:.3g}; that divided by {RANGE_BELOW:g}, rounded", "rule": rule,
            "lrs": lrs[:len(losses)], "losses": losses}


def _smoothed(losses: list[float]) -> list[float]:
    """An exponential moving average of ``losses``, corrected for its start at zero."""
    smooth, average = [], 0.0
    for i, loss in enumerate(losses):
        average = RANGE_SMOOTHING * average + (1 - RANGE_SMOOTHING) * loss
        smooth.append(average / (1 - RANGE_SMOOTHING ** (i + 1)))
    return smooth


def sweep(variant: Variant, index: int, fresh: Callable[[int], nn.Module], source, *,
          seeds: int, reference: float | None, momentum: float, loss_fn, device,
          schedule: Schedule) -> bool:
    """The largest learning rate of the grid at which the variant still trains in every seed,
    each seed from its fresh weights (``fresh(seed)``, ``source(seed)`` its batches). A seed
    counts when it trains (``verdict.trains``) and, given a ``reference`` (the original's
    drop from first to final loss in the main runs), its own loss falls at least
    ``SWEEP_DROP`` of that. The sweep goes up the grid and stops after two failures in a row
    above one that trained. A run cut by the time budget is judged on the steps it made.
    True when the budget cut a run."""
    failures, cut = 0, False
    for lr in LR_GRID:
        finals, ok = [], True
        for seed in range(seeds):
            steps, stop_at = schedule.start(SWEEP, index, f"{variant.name}, lr {lr:g}, "
                                                          f"seed {seed}")
            losses, diverged, _, _ = train(fresh(seed), source(seed).batches(), steps=steps,
                                           lr=lr, momentum=momentum, loss_fn=loss_fn,
                                           device=device, seed=seed, stop_at=stop_at,
                                           on_step=schedule.step)
            schedule.finish()
            if not diverged and len(losses) < steps:
                cut, steps = True, len(losses)
            final = final_loss(losses, diverged, steps)
            finals.append(final)
            ok = ok and trains(losses, diverged, steps) and (
                reference is None or losses[0] - final >= SWEEP_DROP * reference)
        variant.sweep.append(SweepPoint(lr, finals, ok))
        if ok:
            variant.max_stable_lr, failures = lr, 0
            continue
        failures += 1
        if failures == 2 and variant.max_stable_lr is not None:
            schedule.drop(SWEEP, index)
            break
    return cut


def scaled_inits(variant: Variant, index: int, fresh: Callable[[], nn.Module], data,
                 scales, *, lr: float, momentum: float, loss_fn, device,
                 schedule: Schedule) -> None:
    """Train the variant (seed 0) from its starting weights scaled by each factor of
    ``scales``, recording whether it still trains."""
    for scale in scales:
        steps, stop_at = schedule.start(INIT, index, f"{variant.name}, weights ×{scale:g}")
        losses, diverged, _, _ = train(scale_weights(fresh(), scale), data.batches(),
                                       steps=steps, lr=lr, momentum=momentum, loss_fn=loss_fn,
                                       device=device, seed=0, stop_at=stop_at,
                                       on_step=schedule.step)
        schedule.finish()
        steps = min(steps, len(losses)) if not diverged else steps
        variant.init_scales.append(ScaledInit(scale, final_loss(losses, diverged, steps),
                                              status(losses, diverged, steps)))

