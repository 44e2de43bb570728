"""The training benchmark: does a fix make the model train better? Measured, not assumed.

``benchmark(original, fixed)`` first compares the two output for output: when they compute
the same function (a safe fix), it says so and trains nothing unless asked. Otherwise it
picks a learning rate with a range test on the original (unless given), trains both models
from the same starting weights, on the same batches, for the same number of steps over
several seeds, and reports per variant the loss curves, the final loss (of runs that train:
one whose loss does not fall is "not training", and is never averaged), the steps and seconds
to a common target loss, the held-out loss and accuracy in eval mode, the train/eval gap, the
time per step and the parameter count, with a verdict (improved / no measurable difference /
worse / neither trains) and the rule behind it; on request the largest learning rate that
trains in every seed and whether scaled starting weights still train. For a model holding
BatchNorm it measures what a missing ``.eval()`` costs. The same call gives the same steps
and losses on a busy machine as on an idle one.

The user's models are never trained or run: every forward pass, probing included, happens on a
deep copy, so BatchNorm running statistics, ``num_batches_tracked`` and train/eval mode stay as
they were.

The modules, in the order the work flows: ``results`` (defaults and the report, without
torch), ``verdict`` (the rules), ``tasks`` (what to train on, on the input ``bnlint.inputs``
finds, and what is held out), ``training`` (the loop, the range test, the sweep, scaled inits
and how long), ``measure`` (what needs no training: held-out results, outputs compared, the
mode check), ``render`` (table, JSON, plot). Importing this package does not import torch;
``benchmark`` loads it.
"""

from __future__ import annotations

import math
import statistics
import time
from contextlib import nullcontext
from typing import TYPE_CHECKING

from bnlint.bench.results import (
    DEFAULTS, QUICK_MIN_STEPS, QUICK_SEEDS, QUICK_SHARE, BenchEntry, BenchError, BenchReport,
    Plan, Progress, Run, Variant)
from bnlint.bench.verdict import (
    DIVERGED, IDENTICAL, MIN_EFFECT, TRAINS, decide, final_loss, rule_text, status, steps_to, target_text)

if TYPE_CHECKING:
    from torch import nn

__all__ = ["BenchEntry", "BenchError", "BenchReport", "bench_model", "bench_models", "benchmark",
           "mode_check", "safe_fix"]


def benchmark(original: nn.Module, fixed: nn.Module, *, steps: int | None = DEFAULTS["steps"],
              seeds: int | None = None, lr: float | None = DEFAULTS["lr"],
              momentum: float = 0.9, batch_size: int = 32, lr_sweep: bool = False,
              init_scales=(), quick: bool = False, compare: bool = True, exact: bool = False,
              time_budget: float | None = DEFAULTS["time_budget"],
              input_shape: tuple[int, ...] | None = None, example=None, data=None,
              data_label: str = "the given data",
              device: str | None = None, progress: Progress | None = None) -> BenchReport:
    """Train ``original`` and ``fixed`` side by side and say whether the fix helped.

    ``compare``: first compare the two models output for output (their given weights, a few
    batches in training mode, then eval mode); when they compute the same function the
    report says so (verdict ``"identical function"``) and nothing is trained, unless
    ``exact``. ``steps`` is ``None`` for as many as the models' compute allows (the FLOPs of
    a training step, counted, never timed: the same on any machine), or the steps of every
    run; ``seeds`` ``None`` for 3. ``quick``: 2 seeds and half the default steps (the report
    says what that gives up). ``lr`` ``None``: picked by a range test on the original.
    ``lr_sweep``: also find the largest rate of a grid at which each model trains in every
    seed. ``init_scales``: factors; each model is also trained from its starting weights
    scaled by each, and the report says whether it still trains.
    ``data`` is ``None`` for a synthetic task fitted to the model, or the user's data: a
    DataLoader, any iterable of ``(inputs, targets)`` batches, a tuple of two tensors, or a
    function returning one of those (``data_label`` names it in the report); a share of a
    dataset or of tensors is held out. The synthetic task's input is ``example`` (anything
    ``bnlint.check`` takes), else the one ``bnlint.inputs.resolve`` finds (``input_shape`` is
    ``--input-shape``).
    ``time_budget`` (seconds, set-up included; ``None`` for no limit) cuts the steps of every
    run alike when they would not fit, and ``report.cut_by_time`` says so; a ``BenchError``
    before any training when not even a short run fits.
    ``progress`` is told the plan (with the estimated time) before training, then every step.
    When ``original`` holds BatchNorm, ``report.mode_check`` is what a missing ``.eval()``
    costs it. Neither model is changed.
    """
    import torch

    from bnlint.bench import measure, tasks, training

    deadline = time.perf_counter() + time_budget if time_budget else None
    given_seeds = seeds is not None
    seeds = seeds if given_seeds else QUICK_SEEDS if quick else DEFAULTS["seeds"]
    scales = tuple(init_scales)
    if ((steps is not None and steps < 1) or seeds < 1 or batch_size < 2
            or (lr is not None and lr <= 0) or any(s <= 0 for s in scales)):
        raise BenchError("steps and seeds must be at least 1, the batch size at least 2 "
                         "(BatchNorm needs it), the learning rate and the init scales positive")
    dev = training.resolve_device(device)
    task, source = tasks.task_and_data(original, data, input_shape, example, data_label, dev,
                                       batch_size)
    sample = next(source(0).batches())[0][:2]
    tasks.forward_copy(fixed, sample, dev, "the fixed model fails on the original's inputs")
    loss_fn = tasks.loss_function(task)
    held = source(0).heldout()
    probe = held[0] if held is not None else _samples(source(0), measure.MODE_SAMPLES)
    rules: dict[str, str] = {}
    settings = {"batch_size": batch_size, "optimizer": "SGD", "momentum": momentum,
                "device": str(dev), "torch": torch.__version__,
                "tensors": training.weight_mapping(original, fixed)}

    equivalence = None
    if compare:
        equivalence = measure.compare(original, fixed, source(0).batches(), probe, device=dev)
        rules["equivalence"] = equivalence.rule
        if equivalence.identical and not exact:
            mode = _mode_check(original, source, task, probe, loss_fn, lr, momentum, dev,
                               batch_size)
            if mode is not None:
                rules["mode_check"] = mode.rule
            return BenchReport(
                task=task, original=Variant("original", training.count_params(original)),
                fixed=Variant("fixed", training.count_params(fixed)), verdict=IDENTICAL,
                ratio=1.0, rule=equivalence.rule, target="", settings=settings,
                notes=["the same function: nothing to train (train anyway with --bench-exact, "
                       "exact=True)"], equivalence=equivalence, mode_check=mode, rules=rules)

    flops, step_seconds = zip(*(
        training.step_cost(model, source(0).batches(), loss_fn=loss_fn,
                           lr=lr or training.FALLBACK_LR, momentum=momentum, device=dev)
        for model in training.initialise(original, fixed, 0)))
    given = steps is not None
    planned = steps if given else training.default_steps(sum(flops))
    full = planned
    if quick and not given:
        planned = max(QUICK_MIN_STEPS, round(planned * QUICK_SHARE))
    steps = planned
    extra = {"range_test": lr is None, "init_scales": len(scales)}
    if deadline is not None:
        steps = training.fit(planned, seeds, lr_sweep, step_seconds,
                             deadline - time.perf_counter(), time_budget, **extra)
    schedule = training.Schedule(progress, step_seconds, deadline, steps=steps, seeds=seeds,
                                 lr_sweep=lr_sweep, **extra)
    if progress is not None:
        progress.plan(Plan(steps, planned, seeds, lr_sweep, schedule.seconds(),
                           range_test=lr is None, init_scales=scales))

    picked = None
    if lr is None:
        picked = training.range_test(training.initialise(original, fixed, 0)[0], source(0),
                                     steps=schedule.steps[training.RANGE_TEST],
                                     momentum=momentum, loss_fn=loss_fn, device=dev,
                                     schedule=schedule)
        lr = picked["lr"]
        rules["lr"] = f"{picked['rule']}; picked: {picked['why']}"
    variants = (Variant("original", training.count_params(original)),
                Variant("fixed", training.count_params(fixed)))
    trained = []
    for seed in range(seeds):
        models = training.initialise(original, fixed, seed)
        for i in ((0, 1) if seed % 2 == 0 else (1, 0)):  # alternate who runs first
            run_steps, stop_at = schedule.start(training.SEEDS, i,
                                                f"{variants[i].name}, seed {seed}")
            losses, diverged, ms, laps = training.train(
                models[i], source(seed).batches(), steps=run_steps, lr=lr, momentum=momentum,
                loss_fn=loss_fn, device=dev, seed=seed, stop_at=stop_at, on_step=schedule.step)
            schedule.finish()
            run = Run(seed, losses, diverged, ms, laps)
            if held is not None:
                run.heldout = measure.evaluate(models[i], source(seed).heldout(), loss_fn,
                                               task, dev)
            trained.append((variants[i], run))
            if seed == 0 and i == 0:
                first = models[0]
            if not diverged and len(losses) < run_steps:  # the budget cut it
                steps = len(losses)
                schedule.cut(steps)
    for variant, run in trained:
        if len(run.losses) >= steps:  # as long as the shortest run: paired step by step
            run.losses, run.diverged = run.losses[:steps], False
        run.final = final_loss(run.losses, run.diverged, steps)
        run.status = status(run.losses, run.diverged, steps)
        variant.runs.append(run)
    for variant in variants:
        variant.runs.sort(key=lambda r: r.seed)
    for pair in zip(variants[0].runs, variants[1].runs):
        if all(r.status == TRAINS for r in pair):
            target = max(r.final for r in pair)
            for run in pair:
                run.steps_to_target = steps_to(run.losses, target, steps)
                if run.steps_to_target is not None:
                    run.seconds_to_target = sum(run.laps[:run.steps_to_target])

    starts = [r.losses[0] for v in variants for r in v.runs if r.losses]
    verdict, ratio = decide(*([r.final if r.status == TRAINS else math.inf for r in v.runs]
                              for v in variants),
                            statistics.fmean(starts) if starts else math.inf)
    notes: list[str] = []
    if seeds == 1:
        notes.append("one seed gives no spread to judge by: use --seeds 3 or more")
    if quick:
        gave_up = [f"{seeds} seeds instead of {DEFAULTS['seeds']}"] if not given_seeds else []
        gave_up += [f"{planned} steps instead of {full}"] if not given else []
        if gave_up:
            notes.append(f"--quick: {' and '.join(gave_up)}; a smaller effect, or one that "
                         "shows later in training, can go unseen, and the verdict rests on "
                         "fewer runs")
    for variant in variants:
        failed = [r for r in variant.runs if r.status != TRAINS]
        if failed:
            kinds = sorted({r.status for r in failed})
            notes.append(f"the {variant.name} model did not train at lr {lr:g} in "
                         f"{len(failed)} of {len(variant.runs)} seeds ({', '.join(kinds)}): "
                         "its losses are shown, not averaged or compared")
    if variants[0].runs[0].status == DIVERGED:
        mode = _mode_check(original, source, task, probe, loss_fn, None, momentum, dev,
                           batch_size)
    elif measure.holds_batchnorm(original):
        mode = measure.mode_check(first, probe, task, batch_size, dev,
                                  f"the original after its seed-0 run ({steps} steps at lr "
                                  f"{lr:g})")
    else:
        mode = None
    if mode is not None:
        rules["mode_check"] = mode.rule
    sweep_cut = False
    if lr_sweep:
        base = variants[0]
        reference = (statistics.fmean(r.losses[0] - r.final for r in base.runs)
                     if base.trained else None)
        for i, variant in enumerate(variants):
            sweep_cut |= training.sweep(
                variant, i, lambda seed, i=i: training.initialise(original, fixed, seed)[i],
                source, seeds=seeds, reference=reference, momentum=momentum, loss_fn=loss_fn,
                device=dev, schedule=schedule)
        rules["lr_sweep"] = _sweep_rule(seeds, schedule.steps[training.SWEEP], reference)
    if sweep_cut:
        notes.append("--time-budget cut runs of the learning-rate sweep short; each is judged "
                     "on the steps it made")
    if scales:
        for i, variant in enumerate(variants):
            training.scaled_inits(variant, i, lambda i=i: training.initialise(
                original, fixed, 0)[i], source(0), scales, lr=lr, momentum=momentum,
                loss_fn=loss_fn, device=dev, schedule=schedule)
        rules["init_scale"] = (
            f"each model trained from its seed-0 starting weights with every layer weight (each "
            f"parameter of 2 or more dimensions) multiplied by the factor, "
            f"{schedule.steps[training.INIT]} steps at lr {lr:g}; it still trains when its loss "
            f"stays finite and ends at least {MIN_EFFECT:.0%} below its first step's")
    if held is not None:
        rules["heldout"] = (
            f"each trained model on {held[0].shape[0]} samples of the same task it never "
            "trained on, in eval mode (running statistics): loss"
            + (" and accuracy" if task.kind == "classification" else "")
            + ", mean over the seeds")
        rules["gap"] = ("held-out loss (eval mode) minus final training loss (training mode), "
                        "mean over the seeds; a smaller gap is what BatchNorm's regularisation "
                        "promises")
    settings.update({
        "steps": steps, "steps_planned": planned,
        "steps_from": "given" if given else "compute",
        "flops_per_step": dict(zip(("original", "fixed"), flops)),
        "seeds": seeds, "quick": quick,
        "lr": lr, "lr_from": "given" if picked is None else "range test",
        "lr_range_test": picked, "time_budget": time_budget or None,
        "lr_sweep": ({"grid": list(training.LR_GRID), "steps": schedule.steps[training.SWEEP],
                      "seeds": seeds} if lr_sweep else None),
        "init_scales": list(scales),
        "heldout_samples": None if held is None else held[0].shape[0],
        "init": "each layer's reset_parameters(), seeded by the seed number; the fixed model "
                "takes the original's starting value for every tensor they share",
    })
    rules["verdict"] = rule_text(seeds, steps)
    rules["target"] = target_text(steps)
    return BenchReport(
        task=task, original=variants[0], fixed=variants[1], verdict=verdict, ratio=ratio,
        rule=rules["verdict"], target=rules["target"], settings=settings, notes=notes,
        cut_by_time=steps < planned or sweep_cut, equivalence=equivalence, mode_check=mode,
        rules=rules)


def _mode_check(original, source, task, probe, loss_fn, lr, momentum, device, batch_size):
    """The mode check on a copy of the original trained a short run (seed 0), so that its
    predictions and running statistics are not those of fresh weights; ``None`` without
    BatchNorm."""
    from bnlint.bench import measure, training
    from bnlint.bench.results import MIN_STEPS

    if not measure.holds_batchnorm(original):
        return None
    model = training.initialise(original, original, 0)[0]
    lr = lr or training.FALLBACK_LR
    training.train(model, source(0).batches(), steps=MIN_STEPS, lr=lr, momentum=momentum,
                   loss_fn=loss_fn, device=device, seed=0)
    return measure.mode_check(model, probe, task, batch_size, device,
                              f"the original trained {MIN_STEPS} steps from fresh weights "
                              f"(seed 0, lr {lr:g})")


def _sweep_rule(seeds: int, steps: int, reference: float | None) -> str:
    from bnlint.bench.training import LR_GRID, SWEEP_DROP

    grid = ", ".join(f"{lr:g}" for lr in LR_GRID)
    bar = (f"its loss falls from the first step to the final loss by at least {SWEEP_DROP:.0%} "
           f"of the original's drop in the main runs ({reference:.3g})" if reference is not None
           else f"its final loss ends at least {MIN_EFFECT:.0%} below its first step's (the "
                "original did not train in the main runs, so there is no drop to measure by)")
    return (f"the largest of {grid} at which the model trains in every one of "
            f"{seeds} seed{'s' * (seeds != 1)} ({steps} steps each, from fresh weights): no "
            f"divergence, and {bar}")


def _samples(data, n: int):
    """At least ``n`` inputs from the first training batches (the user's data held nothing
    out)."""
    import torch

    batches, count = [], 0
    for x, _ in data.batches():
        batches.append(x)
        count += len(x)
        if count >= n:
            break
    return torch.cat(batches)[:n]


def safe_fix(code: str) -> bool:
    """Whether the registry says the fix of rule ``code`` keeps the function the model
    computes."""
    from bnlint.rules import RULES, Safety

    return RULES[code].fix is Safety.SAFE


def mode_check(model: nn.Module, *, batch_size: int = 32, lr: float | None = None,
               momentum: float = 0.9, input_shape=None, example=None, data=None,
               data_label: str = "the given data", device: str | None = None):
    """What a missing ``.eval()`` costs ``model`` (``results.ModeCheck``): trained a short run
    from fresh weights, the share of held-out predictions that change with the batch in
    training mode, and in eval mode; ``None`` when the model holds no BatchNorm. The other
    options are ``benchmark``'s."""
    from bnlint.bench import measure, tasks, training

    if not measure.holds_batchnorm(model):
        return None
    dev = training.resolve_device(device)
    task, source = tasks.task_and_data(model, data, input_shape, example, data_label, dev,
                                       batch_size)
    held = source(0).heldout()
    probe = held[0] if held is not None else _samples(source(0), measure.MODE_SAMPLES)
    return _mode_check(model, source, task, probe, tasks.loss_function(task), lr, momentum,
                       dev, batch_size)


def bench_model(spec: str, model: nn.Module, *, select=None, ignore=None, exact: bool = False,
                **options) -> BenchEntry:
    """Fix a copy of ``model`` with every fix of the enabled rules, unsafe ones included (only
    copies are trained; nothing is written), and benchmark it against the original. When
    every fix applied is safe, the two are compared output for output first and trained
    only if they differ, or with ``exact``; with an unsafe fix among them, they are trained.
    A model with no fix to apply gets the mode check alone, when it holds BatchNorm.
    ``options`` go to ``benchmark``."""
    from bnlint.autofix import fix

    result = fix(model, select=select, ignore=ignore, unsafe=True)
    entry = BenchEntry(spec, list(result.applied), list(result.skipped))
    try:
        if result.applied:
            compare = all(safe_fix(f.code) for f in result.applied)
            entry.report = benchmark(model, result.model, compare=compare, exact=exact,
                                     **options)
            entry.mode_check = entry.report.mode_check
        else:
            keep = ("batch_size", "lr", "momentum", "input_shape", "example", "data",
                    "data_label", "device")
            entry.mode_check = mode_check(model, **{k: v for k, v in options.items()
                                                    if k in keep})
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
