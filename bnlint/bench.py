"""The training benchmark: does a fix make the model train better? Measured, not assumed.

``benchmark(original, fixed)`` trains both models from the same starting weights, on the same
batches, for a short budget over several seeds, and reports per variant the loss curves, the
final loss, the steps to reach a common target loss, the time per step and the parameter
count, with a verdict (improved / no measurable difference / worse) and the rule behind it.

The user's models are never trained or run: every forward pass, probing included, happens on a
deep copy, so BatchNorm running statistics, ``num_batches_tracked`` and train/eval mode stay as
they were.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bnlint import inputs
from bnlint.render_bench import DEFAULTS

CLASSIFICATION, REGRESSION = "classification", "regression"
SYNTHETIC = "synthetic"
IMPROVED, NEUTRAL, WORSE = "improved", "no measurable difference", "worse"

MIN_EFFECT = 0.05          # a verdict needs the final loss to move by at least this fraction
SOLVED = 0.01              # losses below this fraction of the starting loss count as equal
MAX_CLASSES = 10           # synthetic labels use at most this many of the model's outputs
MIN_STEPS = 20             # a time budget never cuts a run shorter than this
SWEEP_SHARE = 0.5          # each run of the learning-rate sweep is this fraction of a full run
LR_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)

# (what is training now, steps done, steps in all): for a progress bar
Progress = Callable[[str, int, int], None]


class BenchError(Exception):
    """A benchmark that cannot run as asked: one line for the user, the traceback (if any)
    for --verbose."""

    def __init__(self, message: str, detail: str | None = None):
        super().__init__(message)
        self.detail = detail


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

    @property
    def variants(self) -> tuple[Variant, Variant]:
        return self.original, self.fixed

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "final_loss_ratio": _finite(self.ratio),
            "rule": self.rule,
            "target": self.target,
            "task": self.task.to_dict(),
            "settings": self.settings,
            "variants": {v.name: v.to_dict() for v in self.variants},
            "notes": self.notes,
        }


def _finite(value: float) -> float | None:
    """JSON has no infinity: a diverged loss is ``null``."""
    return value if math.isfinite(value) else None


def _shape(shape: tuple[int, ...]) -> str:
    return str(tuple(shape))


# --- the input shape ---------------------------------------------------------------------------

def _forward_copy(model: nn.Module, inputs: torch.Tensor, device, failure: str) -> torch.Tensor:
    """The output of a deep copy of ``model`` in eval mode: the user's model, its running
    statistics and its mode are left alone. ``failure`` begins the message if it raises."""
    probe = copy.deepcopy(model).to(device).eval()
    try:
        with torch.no_grad():
            out = probe(inputs.to(device))
    except Exception as exc:  # noqa: BLE001 - the user's forward may raise anything
        raise BenchError(f"{failure}: {type(exc).__name__}: {exc}",
                         traceback.format_exc()) from None
    if not isinstance(out, torch.Tensor):
        raise BenchError(f"the model returns {type(out).__name__}; the benchmark needs a model "
                         "that returns one tensor")
    return out


def find_input_shape(model: nn.Module, input_shape, device,
                     example=None) -> tuple[tuple[int, ...], str, torch.Tensor]:
    """(input shape, how it was found, the output for a batch of two), by the order of
    ``bnlint.inputs.resolve``."""
    try:
        found = inputs.resolve(model, example, input_shape=input_shape)
    except inputs.ExampleError as exc:
        raise BenchError(str(exc), exc.detail) from None
    if found is None:
        tried = len(dict.fromkeys(inputs.candidate_shapes(model)))
        raise BenchError(f"found no input shape the model accepts (tried {tried} common shapes); "
                         "give one with --input-shape, e.g. --input-shape 3,32,32, or bring data "
                         "with --data module:function")
    shape = found.shape()
    if shape is None:
        raise BenchError(f"the synthetic task feeds the model one tensor, and its input is "
                         f"{found.describe()}; bring data with --data module:function")
    dims = ", ".join(map(str, shape))
    failure = f"the model does not accept inputs of shape (N, {dims}) ({found.origin})"
    return shape, found.origin, _forward_copy(model, found.args[0], device, failure)


# --- data --------------------------------------------------------------------------------------

Batch = tuple[torch.Tensor, torch.Tensor]


class SyntheticData:
    """A learnable task shaped to fit the model, the same every time for a given seed.

    A sample is smooth random content (drawn at a coarse resolution and upsampled) plus noise.
    Its target comes from a fixed random "teacher": a channel-mixing layer with ReLU applied
    at every coarse position, averaged over positions (so convolutional networks with global
    pooling can learn it as well as flat ones), then a linear layer. Regression targets are the
    teacher's outputs scaled to unit variance; a class label is the index of the largest one.
    """

    HIDDEN = 64
    NOISE = 0.3

    def __init__(self, task: Task, batch_size: int, seed: int):
        self.task = task
        self.batch_size = batch_size
        self.seed = seed
        shape = task.input_shape
        self.coarse = shape if len(shape) < 2 else (shape[0], *(min(d, 4) for d in shape[1:]))
        outputs = task.classes if task.kind == CLASSIFICATION else math.prod(task.output_shape)
        g = torch.Generator().manual_seed(seed)
        self.w1 = torch.randn(self.coarse[0], self.HIDDEN, generator=g) / math.sqrt(self.coarse[0])
        self.w2 = torch.randn(self.HIDDEN, outputs, generator=g)
        self.centre, self.scale = torch.zeros(outputs), torch.ones(())
        sample = self._teacher(torch.randn(4096, *self.coarse, generator=g))
        # centred and scaled: classes come out about equally often, targets have unit variance
        self.centre = sample.mean(0)
        self.scale = (sample - self.centre).std().clamp_min(1e-6)

    def _teacher(self, coarse: torch.Tensor) -> torch.Tensor:
        positions = coarse.flatten(2) if coarse.dim() > 2 else coarse.unsqueeze(2)
        hidden = torch.relu(torch.einsum("ncp,ch->nhp", positions, self.w1)).mean(2)
        return (hidden @ self.w2 - self.centre) / self.scale

    def _upsample(self, coarse: torch.Tensor) -> torch.Tensor:
        spatial = self.task.input_shape[1:]
        if tuple(coarse.shape[1:]) == tuple(self.task.input_shape) or len(spatial) > 3:
            return coarse
        mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(spatial)]
        return F.interpolate(coarse, size=spatial, mode=mode, align_corners=False)

    def batches(self) -> Iterator[Batch]:
        g = torch.Generator().manual_seed(self.seed + 1)
        n, shape = self.batch_size, self.task.input_shape
        while True:
            coarse = torch.randn(n, *self.coarse, generator=g)
            x = self._upsample(coarse) + self.NOISE * torch.randn(n, *shape, generator=g)
            target = self._teacher(coarse)
            if self.task.kind == CLASSIFICATION:
                yield x, target.argmax(1)
            else:
                yield x, target.reshape(n, *self.task.output_shape)


class UserData:
    """Batches from the user's DataLoader (or tensors), in an order fixed by the seed."""

    def __init__(self, source, batch_size: int, seed: int):
        if isinstance(source, (tuple, list)) and len(source) == 2 and all(
                isinstance(t, torch.Tensor) for t in source):
            source = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*source),
                                                 batch_size=batch_size, shuffle=True,
                                                 drop_last=True)
        if not isinstance(source, Iterable):
            raise BenchError(f"--data gave {type(source).__name__}; it must give a DataLoader "
                             "(or any iterable of (inputs, targets) batches) or a tuple "
                             "(inputs, targets) of tensors")
        self.source = source
        self.seed = seed

    def batches(self) -> Iterator[Batch]:
        epoch = 0
        while True:
            # a shuffling DataLoader draws its order from the global generator: fix it per epoch
            torch.manual_seed(self.seed * 7919 + epoch)
            empty = True
            for batch in self.source:
                if not (isinstance(batch, (tuple, list)) and len(batch) >= 2):
                    raise BenchError("each batch from --data must be (inputs, targets)")
                empty = False
                yield batch[0], batch[1]
            if empty:
                raise BenchError("--data gave no batches")
            epoch += 1


def user_task(source, model: nn.Module, device, label: str) -> Task:
    """Classification when the targets are integers and the model gives one score per class,
    regression otherwise."""
    x, y = next(UserData(source, 1, 0).batches())
    out = _forward_copy(model, x[:2], device, f"the model fails on a batch from {label}")
    classify = not (y.is_floating_point() or y.is_complex()) and out.dim() == 2 and out.shape[1] > 1
    return Task(CLASSIFICATION if classify else REGRESSION, tuple(x.shape[1:]),
                tuple(out.shape[1:]), "from the data", label,
                classes=out.shape[1] if classify else None)


def synthetic_task(model: nn.Module, input_shape, device, example=None) -> Task:
    shape, origin, out = find_input_shape(model, input_shape, device, example)
    if out.dim() == 2 and out.shape[1] > 1:
        return Task(CLASSIFICATION, shape, tuple(out.shape[1:]), origin, SYNTHETIC,
                    classes=min(out.shape[1], MAX_CLASSES))
    return Task(REGRESSION, shape, tuple(out.shape[1:]), origin, SYNTHETIC)


def loss_function(task: Task) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if task.kind == CLASSIFICATION:
        return lambda out, y: F.cross_entropy(out, y.long())
    return lambda out, y: F.mse_loss(out.reshape(y.shape).float(), y.float())


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


# --- training ----------------------------------------------------------------------------------

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train(model: nn.Module, batches: Iterator[Batch], *, steps: int, lr: float, momentum: float,
          loss_fn, device: torch.device, seed: int, time_limit: float | None = None,
          on_step: Callable[[int], None] | None = None) -> tuple[list[float], bool, float]:
    """Train in place with SGD; (loss at each step, diverged, median step time in ms).

    Training stops at the first loss that is not finite (the model has diverged), and once
    past ``MIN_STEPS`` steps when ``time_limit`` seconds have passed since the first step (the
    first step of a process pays for one-off set-up, which is no cost of the model)."""
    torch.manual_seed(seed)
    model.to(device).train()
    optimiser = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr,
                                momentum=momentum)
    losses: list[float] = []
    times: list[float] = []
    diverged = False
    for step in range(steps):
        x, y = next(batches)
        x, y = x.to(device), y.to(device)
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
            raise BenchError(f"training step {step + 1} failed: {type(exc).__name__}: {exc}",
                             traceback.format_exc()) from None
        _sync(device)
        times.append(time.perf_counter() - start)
        if step == 0:
            began = time.perf_counter()
        losses.append(value)
        if on_step is not None:
            on_step(step + 1)
        if time_limit and step + 1 >= MIN_STEPS and time.perf_counter() - began > time_limit:
            break
    warm = times[2:] or times or [0.0]
    return losses, diverged, statistics.median(warm) * 1000


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


# --- the verdict -------------------------------------------------------------------------------

def rule_text(seeds: int, steps: int) -> str:
    return (f"final loss = mean training loss over the last {window(steps)} steps; "
            f"'{IMPROVED}' ('{WORSE}') when the fixed model's final loss is lower (higher) "
            f"than the original's in every one of the {seeds} seed{'s' * (seeds != 1)} and by at "
            f"least {MIN_EFFECT:.0%} on the geometric mean of the per-seed ratios; losses below "
            f"{SOLVED:.0%} of the starting loss count as equal (both solved); otherwise "
            f"'{NEUTRAL}'")


def _ratio(original: float, fixed: float, floor: float) -> float:
    if not math.isfinite(original) and not math.isfinite(fixed):
        return 1.0
    if not math.isfinite(fixed):
        return math.inf
    if not math.isfinite(original):
        return 0.0
    return max(fixed, floor) / max(original, floor)


def decide(original: list[float], fixed: list[float], start: float) -> tuple[str, float]:
    """(verdict, geometric mean of fixed/original) from the paired per-seed final losses;
    ``start`` is the starting loss, for the "both solved" floor."""
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


# --- the learning-rate sweep -------------------------------------------------------------------

def trains(losses: list[float], diverged: bool, steps: int) -> bool:
    """Finite all along, and at the end at least ``MIN_EFFECT`` below the first step's loss
    (the loss of the starting weights)."""
    if diverged or len(losses) < steps:
        return False
    return final_loss(losses, diverged, steps) < (1 - MIN_EFFECT) * losses[0]


# --- the entry point ---------------------------------------------------------------------------

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


def load_data(spec: str):
    """``--data module:function`` (or ``file.py:function``) -> the function, not yet called."""
    from bnlint.load import load, split_spec

    if split_spec(spec)[1] is None:
        raise BenchError(f"--data {spec}: give module:function, e.g. --data data.py:loaders")
    loaded = load([spec])
    if loaded.results:
        raise BenchError(f"--data {spec}: {loaded.results[0].reason}")
    try:
        return loaded.candidates[0].build()
    except Exception as exc:  # noqa: BLE001 - the user's module may raise anything
        raise BenchError(f"--data {spec}: {type(exc).__name__}: {exc}") from None


class _Steps:
    """Counts training steps over the whole benchmark, for a progress bar."""

    def __init__(self, progress: Progress | None, total: int):
        self.progress, self.total, self.done = progress, total, 0
        self.label = ""

    def step(self, _step: int = 0) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.label, self.done, self.total)

    def skip(self, steps: int) -> None:
        """Steps that will not run (a diverged run, the rest of a stopped sweep)."""
        if steps > 0:
            self.done += steps - 1
            self.step()


def benchmark(original: nn.Module, fixed: nn.Module, *, steps: int = DEFAULTS["steps"],
              seeds: int = DEFAULTS["seeds"], lr: float = DEFAULTS["lr"], momentum: float = 0.9,
              batch_size: int = 32, lr_sweep: bool = False,
              time_budget: float | None = DEFAULTS["time_budget"],
              input_shape: tuple[int, ...] | None = None, example=None, data=None,
              data_label: str = "the given data",
              device: str | None = None, progress: Progress | None = None) -> BenchReport:
    """Train ``original`` and ``fixed`` side by side and say whether the fix helped.

    ``data`` is ``None`` for a synthetic task fitted to the model, or the user's data: a
    DataLoader, any iterable of ``(inputs, targets)`` batches, a tuple of two tensors, or a
    function returning one of those (``data_label`` names it in the report). The synthetic
    task's input is ``example`` (anything ``bnlint.check`` takes), else the one
    ``bnlint.inputs.resolve`` finds (``input_shape`` is ``--input-shape``).
    ``time_budget`` (seconds; ``None`` or 0 for no limit) cuts the steps of every run alike
    when the whole benchmark would take longer.
    ``progress(label, done, total)`` is called after every training step. Neither model is
    changed.
    """
    if steps < 1 or seeds < 1 or batch_size < 2 or lr <= 0:
        raise BenchError("steps and seeds must be at least 1, the batch size at least 2 "
                         "(BatchNorm needs it), the learning rate positive")
    dev = resolve_device(device)
    if data is None:
        task = synthetic_task(original, input_shape, dev, example)
    else:
        if callable(data) and not isinstance(data, Iterable):
            data = data()
        task = user_task(data, original, dev, data_label)

    def source(seed: int):
        return SyntheticData(task, batch_size, seed) if data is None else UserData(
            data, batch_size, seed)

    sample = next(source(0).batches())[0][:2]
    _forward_copy(fixed, sample, dev, "the fixed model fails on the original's inputs")

    loss_fn = loss_function(task)
    notes: list[str] = []
    grid = len(LR_GRID) if lr_sweep else 0

    def planned(steps: int) -> int:
        return 2 * (seeds * steps + grid * _sweep_steps(steps))

    counter = _Steps(progress, planned(steps))
    variants = (Variant("original", count_params(original)), Variant("fixed", count_params(fixed)))
    trained = []
    # each run's share of the budget: the runs of seed 0 find how many steps fit in it
    share = time_budget * steps / planned(steps) if time_budget else None
    requested = steps
    for seed in range(seeds):
        models = initialise(original, fixed, seed)
        for i in ((0, 1) if seed % 2 == 0 else (1, 0)):  # alternate who runs first
            counter.label = f"{variants[i].name}, seed {seed}"
            losses, diverged, ms = train(
                models[i], source(seed).batches(), steps=steps, lr=lr, momentum=momentum,
                loss_fn=loss_fn, device=dev, seed=seed, time_limit=share if seed == 0 else None,
                on_step=counter.step)
            trained.append((variants[i], Run(seed, losses, diverged, ms)))
            if diverged:
                counter.skip(steps - len(losses))
            elif len(losses) < steps:
                steps = len(losses)
                counter.total = counter.done + planned(steps) - len(trained) * steps
    if steps < requested:
        notes.append(f"steps cut from {requested} to {steps} to fit --time-budget "
                     f"{time_budget:g}s")
    for variant, run in trained:
        if len(run.losses) >= steps:  # a run of seed 0 that went on before the cut
            run.losses, run.diverged = run.losses[:steps], False
        run.final = final_loss(run.losses, run.diverged, steps)
        variant.runs.append(run)
    sweep_steps = _sweep_steps(steps) if lr_sweep else 0
    for variant in variants:
        variant.runs.sort(key=lambda r: r.seed)
    for pair in zip(variants[0].runs, variants[1].runs):
        finite = [r.final for r in pair if math.isfinite(r.final)]
        for run in pair:
            if finite and not run.diverged:
                run.steps_to_target = steps_to(run.losses, max(finite), steps)

    starts = [r.losses[0] for v in variants for r in v.runs if r.losses]
    verdict, ratio = decide(variants[0].finals, variants[1].finals,
                            statistics.fmean(starts) if starts else math.inf)
    if seeds == 1:
        notes.append("one seed gives no spread to judge by: use --seeds 3 or more")
    if lr_sweep:
        for i, variant in enumerate(variants):
            _sweep(variant, lambda i=i: initialise(original, fixed, 0)[i], source(0),
                   sweep_steps, momentum, loss_fn, dev, counter)
    mapping = weight_mapping(original, fixed)
    settings = {
        "steps": steps, "seeds": seeds, "batch_size": batch_size, "optimizer": "SGD",
        "lr": lr, "momentum": momentum, "device": str(dev), "time_budget": time_budget or None,
        "lr_sweep": {"grid": list(LR_GRID), "steps": sweep_steps, "seed": 0} if lr_sweep else None,
        "init": "each layer's reset_parameters(), seeded by the seed number; the fixed model "
                "takes the original's starting value for every tensor they share",
        "tensors": mapping,
        "torch": torch.__version__,
    }
    return BenchReport(
        task=task, original=variants[0], fixed=variants[1], verdict=verdict, ratio=ratio,
        rule=rule_text(seeds, steps),
        target=(f"the first step at which the mean loss over the last {window(steps)} steps "
                "reaches the worse variant's final loss (per seed, then averaged)"),
        settings=settings, notes=notes)


def _sweep_steps(steps: int) -> int:
    return max(MIN_STEPS, round(steps * SWEEP_SHARE))


def _sweep(variant: Variant, fresh: Callable[[], nn.Module], data, steps: int, momentum: float,
           loss_fn, device, counter: _Steps) -> None:
    """The largest learning rate of the grid at which the variant still trains, each tried
    from the same fresh weights; the sweep goes up the grid and stops after two failures in a
    row above one that trained."""
    failures = 0
    for n, lr in enumerate(LR_GRID):
        counter.label = f"{variant.name}, lr {lr:g}"
        losses, diverged, _ = train(fresh(), data.batches(), steps=steps, lr=lr,
                                    momentum=momentum, loss_fn=loss_fn, device=device, seed=0,
                                    on_step=counter.step)
        counter.skip(steps - len(losses))
        ok = trains(losses, diverged, steps)
        variant.sweep.append(SweepPoint(lr, final_loss(losses, diverged, steps), ok))
        if ok:
            variant.max_stable_lr, failures = lr, 0
            continue
        failures += 1
        if failures == 2 and variant.max_stable_lr is not None:
            counter.skip(steps * (len(LR_GRID) - n - 1))
            break


# --- a model from the command line -------------------------------------------------------------

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


def bench_model(spec: str, model: nn.Module, *, select=None, ignore=None, **options) -> BenchEntry:
    """Fix a copy of ``model`` with every fix of the enabled rules, unsafe ones included (only
    copies are trained; nothing is written), and benchmark it against the original.
    ``options`` go to ``benchmark``."""
    from bnlint.autofix import fix

    result = fix(model, select=select, ignore=ignore, unsafe=True)
    entry = BenchEntry(spec, list(result.applied), list(result.skipped))
    if result.applied:
        try:
            entry.report = benchmark(model, result.model, **options)
        except BenchError as exc:
            entry.error, entry.detail = str(exc), exc.detail
    return entry


def bench_models(models, *, select=None, ignore=None, data: str | None = None, progress=None,
                 **options) -> list[BenchEntry]:
    """``bnlint --bench``: every ``(spec, model, example)`` fixed and benchmarked, ``example``
    being the input the lint run found for it (or ``None``). ``data`` is a
    ``--data`` spec; ``progress(spec)`` returns a context manager that gives a progress
    callback (or ``None``)."""
    source = load_data(data) if data else None
    entries = []
    for spec, model, example in models:
        with progress(spec) if progress else nullcontext() as update:
            entries.append(bench_model(spec, model, select=select, ignore=ignore, data=source,
                                       data_label=data, progress=update, example=example,
                                       **options))
    return entries
