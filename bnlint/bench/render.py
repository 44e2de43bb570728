"""Benchmark results -> a compact table with sparkline loss curves, JSON, a PNG plot.

Imports neither torch nor matplotlib until a plot is written: the results are plain data.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import TextIO

from bnlint.bench.results import COMPUTE_PER_SEED, MAX_STEPS, MIN_STEPS
from bnlint.bench.verdict import DIVERGED, IDENTICAL, IMPROVED, NOT_TRAINING, TRAINS, WORSE

SPARKS = "▁▂▃▄▅▆▇█"
SPARK_WIDTH = 20
VERDICT_STYLE = {IMPROVED: "bold green", WORSE: "bold red", IDENTICAL: "bold green"}


def plot_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _chunks(values: Sequence[float], width: int) -> list[float]:
    """``values`` squeezed (or kept) to at most ``width`` points, each the mean of its chunk."""
    if len(values) <= width:
        return list(values)
    edges = [round(i * len(values) / width) for i in range(width + 1)]
    return [sum(values[a:b]) / (b - a) for a, b in zip(edges, edges[1:])]


def sparkline(values: Sequence[float], lo: float, hi: float, *, log: bool = False,
              width: int = SPARK_WIDTH) -> str:
    """One character per point, on the scale ``lo``..``hi`` shared by the curves compared."""
    scale = math.log if log else (lambda v: v)
    bottom, top = scale(lo), scale(hi)
    chars = []
    for value in _chunks(values, width):
        level = 0.0 if top == bottom else (scale(value) - bottom) / (top - bottom)
        chars.append(SPARKS[min(len(SPARKS) - 1, max(0, round(level * (len(SPARKS) - 1))))])
    return "".join(chars)


def _curves(report) -> tuple[list[list[float]], float, float, bool]:
    curves = [v.mean_curve() for v in report.variants]
    values = [x for c in curves for x in c if math.isfinite(x)]
    if not values:
        return curves, 0.0, 1.0, False
    lo, hi = min(values), max(values)
    return curves, lo, hi, lo > 0 and hi / lo > 10


def _final(variant) -> str:
    """The mean final loss, or how many runs did not train: those are never averaged."""
    runs = len(variant.runs)
    failed = [(status, sum(r.status == status for r in variant.runs))
              for status in (DIVERGED, NOT_TRAINING)]
    failed = [f"{status} {n}/{runs}" for status, n in failed if n]
    if failed:
        return ", ".join(failed)
    if runs == 1:
        return f"{variant.final_mean:.3g}"
    return f"{variant.final_mean:.3g} ± {variant.final_std:.1g}"


def _steps(variant) -> str:
    steps, seconds = variant.steps_mean, variant.seconds_mean
    if steps is None:
        return "-"
    return f"{steps:.0f}" + ("" if seconds is None else f" ({_seconds(seconds)})")


def _seconds(seconds: float) -> str:
    return f"{seconds:.2g} s" if seconds < 10 else f"{seconds:.0f} s"


def _heldout(variant) -> str:
    heldout = variant.heldout
    if heldout is None:
        return "-"
    text = f"{heldout.loss:.3g}" if math.isfinite(heldout.loss) else "inf"
    return text if heldout.accuracy is None else f"{text} / {heldout.accuracy:.0%}"


def _gap(variant) -> str:
    gap = variant.gap
    return "-" if gap is None else f"{gap:+.3g}"


def _fixes(entry) -> str:
    counts: dict[str, int] = {}
    for fix in entry.applied:
        counts[fix.code] = counts.get(fix.code, 0) + 1
    return ", ".join(f"{code} ×{n}" for code, n in sorted(counts.items()))


def _ratio(report) -> str:
    if report.ratio == 0:
        return "the fixed model trains where the original did not"
    if math.isinf(report.ratio):
        return "the original trains where the fixed model did not"
    if math.isnan(report.ratio):
        return ("no run of either model trained: nothing to compare" if
                not any(r.status == TRAINS for v in report.variants for r in v.runs)
                else "each failed to train in some seeds")
    seeds = len(report.original.runs)
    return (f"final loss {report.ratio:.2f}× the original's (geometric mean over {seeds} "
            f"seed{'s' * (seeds != 1)})")


def _cut(report) -> str:
    """What the time budget did to the runs the verdict is about."""
    settings = report.settings
    if not report.cut_by_time:
        return ""
    budget = f"--time-budget {settings['time_budget']:g}s"
    if settings["steps"] < settings["steps_planned"]:
        return f"; cut by {budget} to {settings['steps']} of {settings['steps_planned']} steps"
    return f"; {budget} cut the learning-rate sweep"


def _steps_from(settings) -> str:
    """Where the number of steps came from, when the user did not give it."""
    flops = sum(settings["flops_per_step"].values())
    return (f"steps: {settings['steps_planned']} from the models' compute, the same on any "
            f"machine: {flops / 1e9:.3g} GFLOP a training step of both, "
            f"{COMPUTE_PER_SEED / 1e9:g} GFLOP a seed, {MIN_STEPS} to {MAX_STEPS} steps")


def _columns(rows: list[list[str]], left: set[int]) -> list[str]:
    """Rows as aligned text: the columns in ``left`` flush left, the others right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) if i in left else cell.rjust(w)
                      for i, (cell, w) in enumerate(zip(row, widths))).rstrip() for row in rows]


def render_text(entries, out: TextIO) -> None:
    from rich.console import Console
    from rich.markup import escape

    console = Console(file=out, highlight=False, soft_wrap=True)
    if not entries:
        console.print("\nNothing to benchmark: no model has a finding with a fix or holds "
                      "BatchNorm.")
    for entry in entries:
        console.print()
        console.print(f"[bold]Benchmark of {escape(entry.spec)}[/]")
        report = entry.report
        if entry.applied:
            console.print(f"  fixes    {_fixes(entry)} (the fixed model is a copy; no file "
                          "changes)")
        for fix in entry.skipped:
            console.print(f"  [dim]not applied: {fix.code} {escape(fix.module)}: "
                          f"{escape(fix.reason or '')}[/]")
        if entry.error:
            console.print(f"  [yellow]not run:[/] {escape(entry.error)}")
        elif report is None:
            console.print("  no fix applies to this model, so there is nothing to train")
        elif not report.trained:
            _identical(console, report)
        else:
            _trained(console, report)
        if entry.mode_check is not None:
            _mode(console, entry.mode_check)
        if report is not None:
            for note in report.notes:
                console.print(f"  [yellow]note:[/] {escape(note)}")


def _identical(console, report) -> None:
    from rich.markup import escape

    eq = report.equivalence
    console.print(f"  [{VERDICT_STYLE[IDENTICAL]}]{IDENTICAL}[/], verified on {eq.inputs} "
                  f"inputs: largest output difference {eq.max_error:.2g} (tolerance "
                  f"{eq.tolerance:.2g}); not trained")
    console.print(f"  [dim]rule: {escape(eq.rule)}[/]")


def _trained(console, report) -> None:
    from rich.markup import escape

    settings = report.settings
    console.print(f"  data     {escape(report.task.describe())}")
    seeds = settings["seeds"]
    lr = settings["lr"]
    console.print(f"  training {settings['steps']} steps × {seeds} seed{'s' * (seeds != 1)}, "
                  f"batch {settings['batch_size']}, SGD lr {lr:g} momentum "
                  f"{settings['momentum']:g}, on {settings['device']}")
    if settings["lr_from"] == "given":
        console.print(f"  lr       {lr:g}, given with --lr")
    else:
        console.print(f"  lr       {lr:g}: {escape(settings['lr_range_test']['why'])}")
    eq = report.equivalence
    if eq is not None:
        console.print("  [dim]outputs compared first: "
                      + (f"{IDENTICAL} (largest difference {eq.max_error:.2g}), trained as "
                         "asked" if eq.identical else
                         f"they differ (by up to {eq.max_error:.2g}), so both are trained")
                      + "[/]")
    sweep = settings["lr_sweep"] is not None
    rows = [["", "params", "final loss", "to target (time)", "ms/step", "held-out loss / acc",
             "gap", "max lr", "loss curve"]]
    curves, lo, hi, log = _curves(report)
    for variant, curve in zip(report.variants, curves):
        top = "none" if variant.max_stable_lr is None else f"{variant.max_stable_lr:g}"
        rows.append([variant.name, f"{variant.params:,}", _final(variant), _steps(variant),
                     f"{variant.step_ms:.1f}", _heldout(variant), _gap(variant), top,
                     sparkline(curve, lo, hi, log=log)])
    if report.task.kind != "classification":
        rows[0][5] = "held-out loss"
    if not sweep:
        rows = [row[:7] + row[8:] for row in rows]
    for line in _columns(rows, left={0, 2, 3, len(rows[0]) - 1}):
        console.print(f"  {escape(line)}")
    style = VERDICT_STYLE.get(report.verdict, "bold yellow")
    console.print(f"  [{style}]{report.verdict}[/]: {_ratio(report)}"
                  f"[yellow]{escape(_cut(report))}[/]")
    rules = report.rules
    console.print(f"  [dim]rule: {escape(report.rule)}[/]")
    console.print(f"  [dim]to target: {escape(report.target)}[/]")
    for key, name in (("heldout", "held-out"), ("gap", "gap"), ("lr", "lr"),
                      ("lr_sweep", "max lr")):
        if key in rules:
            console.print(f"  [dim]{name}: {escape(rules[key])}[/]")
    if settings["steps_from"] == "compute":
        console.print(f"  [dim]{escape(_steps_from(settings))}[/]")
    if settings["init_scales"]:
        for scale in settings["init_scales"]:
            states = [f"{v.name} {_init_status(v, scale)}" for v in report.variants]
            console.print(f"  init ×{scale:g}  {', '.join(states)}")
        console.print(f"  [dim]init: {escape(rules['init_scale'])}[/]")


def _init_status(variant, scale: float) -> str:
    for point in variant.init_scales:
        if point.scale == scale:
            return point.status if point.status != TRAINS else f"trains ({point.final:.3g})"
    return "not run"


def _mode(console, mode) -> None:
    from rich.markup import escape

    console.print(f"  mode     without .eval(): {mode.train_mode_changed:.0%} of "
                  f"{mode.samples} held-out predictions change with the batch; with .eval(): "
                  f"{mode.eval_mode_changed:.0%}")
    console.print(f"  [dim]mode check: {escape(mode.rule)}[/]")


def render_json(lint_report, entries, out: TextIO) -> None:
    """The lint report's JSON, with a ``benchmarks`` list: full curves and settings."""
    data = lint_report.to_dict()
    data["benchmarks"] = [entry.to_dict() for entry in entries]
    json.dump(data, out, indent=2)
    out.write("\n")


def font_cache_missing() -> bool:
    """Whether matplotlib has yet to build its font cache, which its first plot does: that
    takes up to a minute, and the user should know why nothing happens meanwhile."""
    from pathlib import Path

    import matplotlib

    return not any(Path(matplotlib.get_cachedir()).glob("fontlist-*.json"))


def write_plot(entries, path) -> None:
    """One row per benchmarked model: the loss curves of both variants (every seed thin,
    their mean thick), the learning-rate sweep (final loss against the rate, a filled marker
    where every seed trained) and the mode check (the share of predictions that change with
    the batch, in training and in eval mode)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [e for e in entries if e.report is not None or e.mode_check is not None]
    fig, axes = plt.subplots(max(1, len(shown)), 3, figsize=(15, 3.6 * max(1, len(shown))),
                             squeeze=False)
    for row, entry in zip(axes, shown):
        _plot_curves(row[0], entry)
        _plot_sweep(row[1], entry.report)
        _plot_mode(row[2], entry)
    if not shown:
        axes[0, 0].text(0.5, 0.5, "no model was benchmarked", ha="center", va="center")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


COLOURS = ("tab:blue", "tab:orange")


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=9, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def _plot_curves(ax, entry) -> None:
    report = entry.report
    if report is None or not report.trained:
        eq = None if report is None else report.equivalence
        _empty(ax, f"{entry.spec}\n" + (
            "no fix applies: nothing to train" if report is None else
            f"{IDENTICAL}, verified on {eq.inputs} inputs\n(largest difference "
            f"{eq.max_error:.2g}): not trained"))
        return
    for colour, variant in zip(COLOURS, report.variants):
        for run in variant.runs:
            ax.plot(range(1, len(run.losses) + 1), run.losses, color=colour, alpha=0.3,
                    linewidth=0.8)
        curve = variant.mean_curve()
        ax.plot(range(1, len(curve) + 1), curve, color=colour, linewidth=2,
                label=f"{variant.name} ({_final(variant)})")
    if all(x > 0 for v in report.variants for r in v.runs for x in r.losses):
        ax.set_yscale("log")
    ax.set_title(f"{entry.spec}: {report.verdict} (lr {report.settings['lr']:g})", fontsize=10)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.legend(fontsize=8)


def _plot_sweep(ax, report) -> None:
    if report is None or not any(v.sweep for v in report.variants):
        _empty(ax, "learning-rate sweep not run (--lr-sweep)")
        return
    for colour, variant in zip(COLOURS, report.variants):
        points = [(p.lr, max(f for f in p.finals if math.isfinite(f)) if any(
            math.isfinite(f) for f in p.finals) else math.nan, p.trains) for p in variant.sweep]
        lrs, finals, _ = zip(*points)
        ax.plot(lrs, finals, color=colour, label=f"{variant.name} (max lr "
                f"{'none' if variant.max_stable_lr is None else f'{variant.max_stable_lr:g}'})")
        for lr, final, trains in points:
            ax.plot([lr], [final], "o", color=colour, fillstyle="full" if trains else "none")
    ax.set_xscale("log")
    finals = [f for v in report.variants for p in v.sweep for f in p.finals if math.isfinite(f)]
    if finals and min(finals) > 0:
        ax.set_yscale("log")  # a rate that blows up would flatten the others
    ax.set_title("learning-rate sweep: worst seed's final loss (filled: trains)", fontsize=10)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("final training loss")
    ax.legend(fontsize=8)


def _plot_mode(ax, entry) -> None:
    mode = entry.mode_check
    if mode is None:
        _empty(ax, "mode check: the model holds no BatchNorm")
        return
    shares = [mode.train_mode_changed * 100, mode.eval_mode_changed * 100]
    bars = ax.bar(["training mode\n(no .eval())", "eval mode"], shares,
                  color=("tab:red", "tab:green"))
    for bar, share in zip(bars, shares):
        ax.text(bar.get_x() + bar.get_width() / 2, share, f"{share:.0f}%", ha="center",
                va="bottom", fontsize=9)
    ax.set_ylim(0, 100)
    ax.set_ylabel("% of predictions that change")
    ax.set_title(f"mode check: the same {mode.samples} samples, other batches", fontsize=10)
