"""Benchmark results -> a compact table with sparkline loss curves, JSON, a PNG plot.

Imports neither torch nor matplotlib until a plot is written: the results are plain data.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import TextIO

from bnlint.bench.results import COMPUTE_PER_SEED, MAX_STEPS, MIN_STEPS
from bnlint.bench.verdict import IMPROVED, WORSE

SPARKS = "▁▂▃▄▅▆▇█"
SPARK_WIDTH = 20
VERDICT_STYLE = {IMPROVED: "bold green", WORSE: "bold red"}


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
    diverged = sum(r.diverged for r in variant.runs)
    if diverged:
        return f"diverged {diverged}/{len(variant.runs)}"
    if len(variant.runs) == 1:
        return f"{variant.final_mean:.3g}"
    return f"{variant.final_mean:.3g} ± {variant.final_std:.1g}"


def _steps(variant) -> str:
    steps = variant.steps_mean
    return "-" if steps is None else f"{steps:.0f}"


def _fixes(entry) -> str:
    counts: dict[str, int] = {}
    for fix in entry.applied:
        counts[fix.code] = counts.get(fix.code, 0) + 1
    return ", ".join(f"{code} ×{n}" for code, n in sorted(counts.items()))


def _ratio(report) -> str:
    if report.ratio == 0:
        return "the original diverged, the fixed model did not"
    if math.isinf(report.ratio):
        return "the fixed model diverged, the original did not"
    if math.isnan(report.ratio):
        return "each diverged in some seeds"
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
        console.print("\nNothing to benchmark: no model has a finding with a fix.")
    for entry in entries:
        console.print()
        console.print(f"[bold]Benchmark of {escape(entry.spec)}[/]")
        if entry.report is None:
            reason = entry.error or "no fix applies to this model, so there is nothing to compare"
            console.print(f"  [yellow]not run:[/] {escape(reason)}")
            continue
        report, settings = entry.report, entry.report.settings
        console.print(f"  fixes    {_fixes(entry)} (the fixed model is a copy; no file changes)")
        for fix in entry.skipped:
            console.print(f"  [dim]not applied: {fix.code} {escape(fix.module)}: "
                          f"{escape(fix.reason or '')}[/]")
        console.print(f"  data     {escape(report.task.describe())}")
        seeds = settings["seeds"]
        console.print(f"  training {settings['steps']} steps × {seeds} seed{'s' * (seeds != 1)}, "
                      f"batch {settings['batch_size']}, SGD lr {settings['lr']:g} momentum "
                      f"{settings['momentum']:g}, on {settings['device']}")
        sweep = settings["lr_sweep"] is not None
        rows = [["", "params", "final loss", "to target", "ms/step", "max lr", "loss curve"]]
        curves, lo, hi, log = _curves(report)
        for variant, curve in zip(report.variants, curves):
            lr = "none" if variant.max_stable_lr is None else f"{variant.max_stable_lr:g}"
            rows.append([variant.name, f"{variant.params:,}", _final(variant), _steps(variant),
                         f"{variant.step_ms:.1f}", lr, sparkline(curve, lo, hi, log=log)])
        if not sweep:
            rows = [row[:5] + row[6:] for row in rows]
        for line in _columns(rows, left={0, 2, len(rows[0]) - 1}):
            console.print(f"  {escape(line)}")
        style = VERDICT_STYLE.get(report.verdict, "bold yellow")
        console.print(f"  [{style}]{report.verdict}[/]: {_ratio(report)}"
                      f"[yellow]{escape(_cut(report))}[/]")
        console.print(f"  [dim]rule: {escape(report.rule)}[/]")
        console.print(f"  [dim]to target: {escape(report.target)}[/]")
        if settings["steps_from"] == "compute":
            console.print(f"  [dim]{escape(_steps_from(settings))}[/]")
        if sweep:
            grid = ", ".join(f"{lr:g}" for lr in settings["lr_sweep"]["grid"])
            console.print(f"  [dim]max lr: the largest of {grid} at which the model still trains "
                          f"({settings['lr_sweep']['steps']} steps, seed 0): no divergence and "
                          "a final loss at least 5% below the starting loss[/]")
        for note in report.notes:
            console.print(f"  [yellow]note:[/] {escape(note)}")


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
    """Loss curves of both variants, every seed (thin) and their mean (thick), one panel per
    benchmarked model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [e for e in entries if e.report is not None]
    fig, axes = plt.subplots(max(1, len(shown)), 1, figsize=(8, 3.6 * max(1, len(shown))),
                             squeeze=False)
    for ax, entry in zip(axes[:, 0], shown):
        report = entry.report
        for colour, variant in zip(("tab:blue", "tab:orange"), report.variants):
            for run in variant.runs:
                ax.plot(range(1, len(run.losses) + 1), run.losses, color=colour, alpha=0.3,
                        linewidth=0.8)
            curve = variant.mean_curve()
            ax.plot(range(1, len(curve) + 1), curve, color=colour, linewidth=2,
                    label=f"{variant.name} ({_final(variant)})")
        if all(x > 0 for v in report.variants for r in v.runs for x in r.losses):
            ax.set_yscale("log")
        ax.set_title(f"{entry.spec}: {report.verdict}", fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.legend(fontsize=8)
    if not shown:
        axes[0, 0].text(0.5, 0.5, "no model was benchmarked", ha="center", va="center")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
