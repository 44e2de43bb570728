"""The training benchmark: does a fix make the model train better? Measured, not assumed.

``benchmark(original, fixed)`` trains both models from the same starting weights, on the same
batches, for the same number of steps over several seeds, and reports per variant the loss
curves, the final loss, the steps to reach a common target loss, the time per step and the
parameter count, with a verdict (improved / no measurable difference / worse) and the rule
behind it. The same call gives the same steps and losses on a busy machine as on an idle one.

The user's models are never trained or run: every forward pass, probing included, happens on a
deep copy, so BatchNorm running statistics, ``num_batches_tracked`` and train/eval mode stay as
they were.

The modules, in the order the work flows: ``results`` (defaults and the report, without
torch), ``verdict`` (the decision rule), ``tasks`` (what to train on, on the input
``bnlint.inputs`` finds), ``training`` (the loop, the sweep and how long), ``render`` (table,
JSON, plot). Importing this package does not import torch; ``benchmark`` loads it.
"""

from __future__ import annotations

import math
import statistics
import time
from contextlib import nullcontext
from typing import TYPE_CHECKING

from bnlint.bench.results import (
    DEFAULTS, BenchEntry, BenchError, BenchReport, Plan, Progress, Run, Variant)
from bnlint.bench.verdict import decide, final_loss, rule_text, steps_to, target_text

if TYPE_CHECKING:
    from torch import nn

__all__ = ["BenchEntry", "BenchError", "BenchReport", "bench_model", "bench_models", "benchmark"]


def benchmark(original: nn.Module, fixed: nn.Module, *, steps: int | None = DEFAULTS["steps"],
              seeds: int = DEFAULTS["seeds"], lr: float = DEFAULTS["lr"], momentum: float = 0.9,
              batch_size: int = 32, lr_sweep: bool = False,
              time_budget: float | None = DEFAULTS["time_budget"],
              input_shape: tuple[int, ...] | None = None, example=None, data=None,
              data_label: str = "the given data",
              device: str | None = None, progress: Progress | None = None) -> BenchReport:
    """Train ``original`` and ``fixed`` side by side and say whether the fix helped.

    ``steps`` is ``None`` for as many as the models' compute allows (the FLOPs of a training
    step, counted, never timed: the same on any machine), or the steps of every run.
    ``data`` is ``None`` for a synthetic task fitted to the model, or the user's data: a
    DataLoader, any iterable of ``(inputs, targets)`` batches, a tuple of two tensors, or a
    function returning one of those (``data_label`` names it in the report). The synthetic
    task's input is ``example`` (anything ``bnlint.check`` takes), else the one
    ``bnlint.inputs.resolve`` finds (``input_shape`` is ``--input-shape``).
    ``time_budget`` (seconds, set-up included; ``None`` for no limit) cuts the steps of every
    run alike when they would not fit, and ``report.cut_by_time`` says so; a ``BenchError``
    before any training when not even a short run fits.
    ``progress`` is told the plan (with the estimated time) before training, then every step.
    Neither model is changed.
    """
    import torch

    from bnlint.bench import tasks, training

    deadline = time.perf_counter() + time_budget if time_budget else None
    if (steps is not None and steps < 1) or seeds < 1 or batch_size < 2 or lr <= 0:
        raise BenchError("steps and seeds must be at least 1, the batch size at least 2 "
                         "(BatchNorm needs it), the learning rate positive")
    dev = training.resolve_device(device)
    task, source = tasks.task_and_data(original, data, input_shape, example, data_label, dev,
                                       batch_size)
    sample = next(source(0).batches())[0][:2]
    tasks.forward_copy(fixed, sample, dev, "the fixed model fails on the original's inputs")
    loss_fn = tasks.loss_function(task)

    flops, step_seconds = zip(*(
        training.step_cost(model, source(0).batches(), loss_fn=loss_fn, lr=lr,
                           momentum=momentum, device=dev)
        for model in training.initialise(original, fixed, 0)))
    given = steps is not None
    planned = steps if given else training.default_steps(sum(flops))
    steps = planned
    if deadline is not None:
        steps = training.fit(planned, seeds, lr_sweep, step_seconds,
                             deadline - time.perf_counter(), time_budget)
    schedule = training.Schedule(progress, step_seconds, deadline, steps=steps, seeds=seeds,
                                 lr_sweep=lr_sweep)
    if progress is not None:
        progress.plan(Plan(steps, planned, seeds, lr_sweep, schedule.seconds()))

    variants = (Variant("original", training.count_params(original)),
                Variant("fixed", training.count_params(fixed)))
    trained = []
    for seed in range(seeds):
        models = training.initialise(original, fixed, seed)
        for i in ((0, 1) if seed % 2 == 0 else (1, 0)):  # alternate who runs first
            run_steps, stop_at = schedule.start(training.SEEDS, i,
                                                f"{variants[i].name}, seed {seed}")
            losses, diverged, ms = training.train(
                models[i], source(seed).batches(), steps=run_steps, lr=lr, momentum=momentum,
                loss_fn=loss_fn, device=dev, seed=seed, stop_at=stop_at, on_step=schedule.step)
            schedule.finish()
            trained.append((variants[i], Run(seed, losses, diverged, ms)))
            if not diverged and len(losses) < run_steps:  # the budget cut it
                steps = len(losses)
                schedule.cut(steps)
    for variant, run in trained:
        if len(run.losses) >= steps:  # as long as the shortest run: paired step by step
            run.losses, run.diverged = run.losses[:steps], False
        run.final = final_loss(run.losses, run.diverged, steps)
        variant.runs.append(run)
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
    notes: list[str] = []
    if seeds == 1:
        notes.append("one seed gives no spread to judge by: use --seeds 3 or more")
    sweep_cut = False
    if lr_sweep:
        for i, variant in enumerate(variants):
            sweep_cut |= training.sweep(
                variant, i, lambda i=i: training.initialise(original, fixed, 0)[i], source(0),
                momentum=momentum, loss_fn=loss_fn, device=dev, schedule=schedule)
    if sweep_cut:
        notes.append("--time-budget cut runs of the learning-rate sweep short; each is judged "
                     "on the steps it made")
    settings = {
        "steps": steps, "steps_planned": planned,
        "steps_from": "given" if given else "compute",
        "flops_per_step": dict(zip(("original", "fixed"), flops)),
        "seeds": seeds, "batch_size": batch_size, "optimizer": "SGD",
        "lr": lr, "momentum": momentum, "device": str(dev), "time_budget": time_budget or None,
        "lr_sweep": ({"grid": list(training.LR_GRID), "steps": schedule.steps[training.SWEEP],
                      "seed": 0} if lr_sweep else None),
        "init": "each layer's reset_parameters(), seeded by the seed number; the fixed model "
                "takes the original's starting value for every tensor they share",
        "tensors": training.weight_mapping(original, fixed),
        "torch": torch.__version__,
    }
    return BenchReport(
        task=task, original=variants[0], fixed=variants[1], verdict=verdict, ratio=ratio,
        rule=rule_text(seeds, steps), target=target_text(steps), settings=settings, notes=notes,
        cut_by_time=steps < planned or sweep_cut)


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
    being the input the lint run found for it (or ``None``). ``data`` is a ``--data`` spec; ``progress(spec)`` returns a context manager that gives a ``Progress``
    (or ``None``)."""
    from bnlint.bench.tasks import load_data

    source = load_data(data) if data else None
    entries = []
    for spec, model, example in models:
        with progress(spec) if progress else nullcontext() as watcher:
            entries.append(bench_model(spec, model, select=select, ignore=ignore, data=source,
                                       data_label=data, progress=watcher, example=example,
                                       **options))
    return entries
