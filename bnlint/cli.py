"""The command line: parse options, call the API, pick a renderer, choose the exit code.

Exit codes, as ruff's: 0 no findings, 1 findings, 2 usage error, unreadable or failing model
files, or an internal error; 130 when interrupted.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

import click

from bnlint import __version__, baseline, workers
from bnlint.bench import render as render_bench
from bnlint.bench.results import DEFAULTS as BENCH_DEFAULTS, MAX_STEPS, MIN_STEPS, QUICK_SEEDS
from bnlint.config import ConfigError, load_config
from bnlint.suppressions import applying_per_file_ignores
from bnlint.render import COLORS, FORMATS, render, write_jsonl
from bnlint.rules import RULES, Scope, UnknownRuleError, enabled_codes

EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130


def _codes(values: tuple[str, ...]) -> list[str]:
    return [c.strip() for v in values for c in v.split(",") if c.strip()]


def _list_rules(ctx: click.Context, _param, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    width = max(len(r.name) for r in RULES.values())
    click.echo(f"{'code':<6} {'name':<{width}} {'fix':<7} {'default':<8} summary")
    for rule in RULES.values():
        click.echo(f"{rule.code:<6} {rule.name:<{width}} {rule.fix or '-':<7} "
                   f"{'on' if rule.default else 'off':<8} {rule.summary}")
    ctx.exit(EXIT_CLEAN)


def _explain(ctx: click.Context, _param, value: str | None) -> None:
    if not value or ctx.resilient_parsing:
        return
    rule = RULES.get(value.strip().upper())
    if rule is None:
        raise click.BadParameter(f"unknown rule {value!r}; `bnlint --list-rules` shows them all",
                                 param_hint="--explain")
    click.echo(f"{rule.code} ({rule.name}): {rule.summary}\n")
    click.echo(f"Fix: {rule.fix or 'none'}. Enabled by default: {'yes' if rule.default else 'no'}.\n")
    click.echo(rule.explanation.rstrip())
    ctx.exit(EXIT_CLEAN)


def _tell(notes, saved: list[str], hidden: list[str]) -> None:
    """On stderr, so that stdout stays the report or the diff: what the fixes could not do,
    what was saved, and how many unsafe fixes (``hidden``: their codes) were left out."""
    for line in [*map(str, notes), *saved]:
        click.echo(line, err=True)
    if hidden:
        models = sum(RULES[code].scope == Scope.GRAPH for code in hidden)
        what = ("what the model computes, so it needs training again" if models == len(hidden)
                else "what the script does" if not models else
                "what the models compute (they need training again) and what the scripts do")
        count = len(hidden)
        click.echo(f"{count} more fix{'es' * (count != 1)} with --unsafe-fixes "
                   f"({'they change' if count != 1 else 'it changes'} {what}).", err=True)


def _tell_checkpoints(plan) -> None:
    """After --fix took biases away: old checkpoints need converting to load strictly."""
    specs = sorted(set().union(*plan.debiased.values())) if plan.debiased else []
    if not specs:
        return
    command = f"bnlint {shlex.quote(specs[0]) if len(specs) == 1 else 'SPEC'} " \
              "--convert-checkpoint OLD.pt NEW.pt"
    among = "" if len(specs) == 1 else f" (SPEC: {', '.join(map(shlex.quote, specs))})"
    click.echo("Checkpoints saved before this fix hold the removed biases and no longer load "
               f"with strict=True; convert each with `{command}`{among}.", err=True)


def _convert_checkpoint(spec: str, old: Path, new: Path) -> None:
    """--convert-checkpoint: write ``new``, ``old`` made to fit the fixed model ``spec``."""
    import contextlib
    import os
    import tempfile
    from collections.abc import Mapping

    import torch

    from bnlint.checkpoint import CheckpointError, convert_checkpoint

    def fail(message: str) -> None:
        click.echo(f"bnlint: error: {message}", err=True)
        sys.exit(EXIT_ERROR)

    if new.exists():
        fail(f"{new} already exists; not overwriting it")
    try:
        state = torch.load(old, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a missing file, or not one torch.save wrote
        fail(f"cannot read {old}: {exc}")
    if not (isinstance(state, Mapping) and all(isinstance(v, torch.Tensor)
                                               for v in state.values())):
        fail(f"{old} holds no state_dict (names -> tensors); save `model.state_dict()`")
    try:
        with contextlib.redirect_stdout(sys.stderr):  # what the user's code prints
            converted = convert_checkpoint(spec, state)
    except CheckpointError as exc:
        fail(f"{old}: {exc}")
    fd, tmp = tempfile.mkstemp(dir=new.parent if str(new.parent) else ".", suffix=".bnlint")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(converted, handle)
        os.replace(tmp, new)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    folded = [key for key in state if key not in converted]
    click.echo(f"{new}: {old} for {spec}, with "
               + (f"{len(folded)} bias{'es' * (len(folded) != 1)} folded into BatchNorm's "
                  f"running mean ({', '.join(folded)})" if folded else "nothing to fold"))


def _warn(report) -> None:
    """On stderr, whatever the format: a run that checked nothing must not pass for clean."""
    for warning in report.warnings:
        click.echo(f"bnlint: warning: {warning}", err=True)


BENCH_ONLY = ("lr_sweep", "plot", "data", "steps", "seeds", "lr", "time_budget", "device",
              "bench_exact", "quick", "init_scale")


def _scales(_ctx, _param, value: str | None) -> tuple[float, ...]:
    """``0.1,10`` -> ``(0.1, 10.0)``: positive factors."""
    if value is None:
        return ()
    try:
        scales = tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError:
        scales = ()
    if not scales or not all(0 < s < float("inf") for s in scales):
        raise click.BadParameter(f"{value!r}: give positive factors separated by commas, "
                                 "e.g. 0.1,10")
    return scales


def _input_shape(_ctx, _param, value: str | None) -> tuple[int, ...] | None:
    """``3,32,32``, ``3x32x32`` or ``(3, 32, 32)`` -> ``(3, 32, 32)``."""
    if value is None:
        return None
    text = re.sub(r"\s", "", value).strip("()[]").rstrip(",")
    if not re.fullmatch(r"[1-9]\d*([,x][1-9]\d*)*", text):
        raise click.BadParameter(f"{value!r} is not a shape; write it like 3,32,32")
    return tuple(int(d) for d in re.split("[,x]", text))


def _size(_ctx, _param, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return workers.parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _half_the_memory() -> int | None:
    total = workers.machine_memory()
    return total // 2 if total else None


@contextlib.contextmanager
def _progress(files: int, verbose: bool, stream) -> Iterator[workers.Watch]:
    """What a repository run shows while it goes: on a terminal, a bar on stderr (files and
    models done, the model being checked); with ``verbose``, each model as it finishes; each
    finding written to ``stream`` (the output file) as it is found."""
    done = {"files": 0, "models": 0}

    def say(line: str) -> None:
        if bar is not None:
            bar.console.print(line, markup=False, highlight=False)
        else:
            click.echo(line, err=True)

    def begin(spec: str) -> None:
        if bar is not None:
            bar.update(task, description=spec)

    def finished(spec, results, findings, seconds: float, peak: int | None) -> None:
        done["models"] += len(results)
        if bar is not None:
            bar.update(task, models=done["models"])
        memory = f", peak memory {workers.format_size(peak)}" if peak else ""
        for result in results if verbose else ():
            what = {"ok": "partly analysed" if result.opaque else "analysed"}.get(
                result.status, f"{result.status}: {result.reason}")
            say(f"{result.spec}: {what} ({len(findings)} finding{'s' * (len(findings) != 1)},"
                f" {seconds:.1f} s{memory})")
        found(findings)

    def found(findings) -> None:
        if stream is not None:
            for finding in findings:
                write_jsonl(finding, stream)
            stream.flush()

    def unit_done() -> None:
        done["files"] += 1
        if bar is not None:
            bar.update(task, completed=done["files"])

    watch = workers.Watch(begin, finished, unit_done, found)
    if not (files and sys.stderr.isatty()):
        bar = None
        yield watch
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (BarColumn(), MofNCompleteColumn(), TextColumn("files, {task.fields[models]} models"),
               TimeElapsedColumn(), TextColumn("{task.description}"))
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("", total=files, models=0)
        yield watch


def _check_bench(ctx: click.Context, bench: bool, fmt: str, fixing: bool, plot) -> None:
    if not bench:
        for name in BENCH_ONLY:
            if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE:
                raise click.UsageError(f"--{name.replace('_', '-')} goes with --bench")
        return
    if fixing:
        raise click.UsageError("--bench trains fixed copies and changes no file; use it "
                               "without --fix, --diff and --save-fixed")
    if fmt not in ("text", "json"):
        raise click.UsageError("--bench reports as text or json")
    if plot and not render_bench.plot_available():
        raise click.UsageError("--plot needs matplotlib, which is not installed: "
                               "pip install 'bnlint[plot]'")


def _visitor(fixer, benched: list | None):
    """``on_model``: the source fixer sees every model; for --bench, keep each model with a
    finding its graph fixes can fix, or holding BatchNorm (for the mode check)."""
    def visit(spec, model, findings):
        fixer.visit_model(spec, model, findings)
        if benched is None:
            return
        from bnlint.bench.measure import holds_batchnorm

        if any(f.fix for f in findings) or holds_batchnorm(model):
            benched.append((spec, model))
    return visit


def _also_fold(visit, folder: Path, example, input_shape, saved: list[str]):
    """``on_model`` for --save-folded: ``visit``, then fold the model into a new folder in
    ``folder``, noting in ``saved`` what was done."""
    from bnlint.folding import save
    from bnlint.sourcefix import folder_name

    def fold_each(spec, model, findings):
        visit(spec, model, findings)
        saved.append(save(spec, model, folder / folder_name(spec), example, input_shape))
    return fold_each


ESTIMATE_FROM = 5.0  # seconds: a benchmark expected to train longer says so before it starts


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


class _Watcher:
    """The terminal side of one model's benchmark: the estimated time on stderr before a long
    run, and a progress bar while it trains (only when stderr is a terminal, so piped and JSON
    output stay clean)."""

    def __init__(self, title: str, bar=None):
        self.title, self.bar = title, bar
        self.task = bar.add_task(title, total=None) if bar else None

    def plan(self, plan) -> None:
        if plan.seconds < ESTIMATE_FROM:
            return
        seeds = f"{plan.seeds} seed{'s' * (plan.seeds != 1)}"
        cut = (f" (cut from {plan.planned} to fit --time-budget)"
               if plan.steps < plan.planned else "")
        extra = [*["a learning-rate range test first"] * plan.range_test,
                 *["a learning-rate sweep"] * plan.lr_sweep,
                 *[f"{len(plan.init_scales)} scaled inits"] * bool(plan.init_scales)]
        extra = f", with {' and '.join(extra)}" if extra else ""
        line = (f"Benchmarking {self.title}: {plan.steps} steps{cut} × {seeds} of both "
                f"models{extra}, about {_duration(plan.seconds)} (estimated from the first "
                "steps)")
        if self.bar is not None:
            self.bar.console.print(line, markup=False, highlight=False)
        else:
            click.echo(line, err=True)

    def step(self, label: str, done: int, total: int) -> None:
        if self.bar is not None:
            self.bar.update(self.task, description=f"{self.title}: {label}", completed=done,
                            total=total)


@contextlib.contextmanager
def _watch(title: str) -> Iterator[_Watcher]:
    if not sys.stderr.isatty():
        yield _Watcher(title)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("steps"), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        yield _Watcher(title, bar)


def _load_example(spec: str | None, verbose: bool):
    """``--example``, evaluated; a spec that fails ends the run with one line."""
    if spec is None:
        return None
    from bnlint.inputs import ExampleError, load_example

    try:
        with contextlib.redirect_stdout(sys.stderr):  # the user's code may print
            return load_example(spec)
    except ExampleError as exc:
        click.echo(f"bnlint: error: --example {spec}: {exc}", err=True)
        if verbose and exc.detail:
            click.echo(exc.detail, err=True)
        sys.exit(EXIT_ERROR)


def _bench(models, report, select, ignore, options) -> list:
    from bnlint.bench import BenchError, bench_models

    examples = {m.spec: m.example for m in report.models}
    try:
        return bench_models([(spec, model, examples.get(spec)) for spec, model in models],
                            select=select, ignore=ignore, progress=_watch, **options)
    except BenchError as exc:  # --data that cannot be loaded: no model can be benchmarked
        click.echo(f"bnlint: error: {exc}", err=True)
        sys.exit(EXIT_ERROR)


def _show_bench(entries, fmt: str, plot, verbose: bool) -> None:
    """The text tables (JSON has them already), the plot, and on stderr each model that
    could not be benchmarked."""
    if fmt == "text":
        render_bench.render_text(entries, sys.stdout)
    for entry in entries:
        if entry.error:
            click.echo(f"bnlint: error: {entry.spec}: benchmark not run: {entry.error}", err=True)
            if verbose and entry.detail:
                click.echo(entry.detail, err=True)
    if plot:
        if render_bench.font_cache_missing():
            click.echo("Building matplotlib's font cache (its first plot only; this can take a "
                       "minute)...", err=True)
        render_bench.write_plot(entries, plot)
        click.echo(f"Loss curves, learning-rate sweep and mode check written to {plot}",
                   err=True)


class _Stdout:
    """``sys.stdout`` for a run whose reader may stop early (`bnlint --explain BN001 | head -1`):
    once the pipe is closed, the rest of the output goes to /dev/null, as Python's
    documentation advises for SIGPIPE, and the run ends with the status a full read would
    have seen, without a traceback."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._discard()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._discard()

    def _discard(self) -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self._stream.fileno())
        os.close(devnull)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


class _Command(click.Command):
    def main(self, *args, **kwargs):
        stdout = sys.stdout
        sys.stdout = _Stdout(stdout)
        try:
            return super().main(*args, **kwargs)
        finally:
            sys.stdout.flush()
            sys.stdout = stdout


def _check_run_options(paths, stdin_filename, generate_baseline, statistics, fmt,
                       fixing_or_bench) -> None:
    """Usage errors of the options that choose what a run reads and what it reports."""
    if "-" in paths and len(paths) > 1:
        raise click.UsageError("- (standard input) must be the only PATH")
    if "-" in paths and not stdin_filename:
        raise click.UsageError("- reads the file from standard input: name the file it stands "
                               "for with --stdin-filename PATH")
    if stdin_filename and paths not in ((), ("-",)):
        raise click.UsageError("--stdin-filename names the text read from standard input; give "
                               "- as the only PATH")
    if stdin_filename and fixing_or_bench:
        raise click.UsageError("text read from standard input is only checked: it goes with "
                               "neither --fix, --diff, --save-fixed nor --bench")
    if generate_baseline and (fixing_or_bench or statistics):
        raise click.UsageError("--generate-baseline writes the findings to a file; it goes with "
                               "neither --fix, --diff, --save-fixed, --bench nor --statistics")
    if statistics and fmt not in ("text", "concise", "json"):
        raise click.UsageError("--statistics prints a table as text, or JSON with --format json")


def _write_output_to(ctx: click.Context, path: Path) -> None:
    """Send what goes to stdout (the report, the diff) to ``path`` for the rest of the run."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        stream = path.open("w", encoding="utf-8")
    except OSError as exc:
        click.echo(f"bnlint: error: --output-file: cannot write {path}: {exc}", err=True)
        sys.exit(EXIT_ERROR)
    previous = sys.stdout

    def close() -> None:
        sys.stdout = previous
        stream.close()

    sys.stdout = stream
    ctx.call_on_close(close)


def _paths_to_check(ctx: click.Context, paths, stdin_filename, settings, exclude,
                    force_exclude: bool, quiet: bool) -> list[str]:
    """The specs to lint: ``paths``, less those --force-exclude skips, or a temporary copy of
    standard input standing in for ``stdin_filename``; a run left with none ends here."""
    from bnlint import files
    from bnlint.load import force_excluded

    patterns = [*exclude, *settings.exclude]
    text = click.get_binary_stream("stdin").read() if stdin_filename else b""
    named = [stdin_filename] if stdin_filename else list(paths)
    kept = [p for p in named if not (force_exclude and force_excluded(p, patterns))]
    if not kept:
        if not quiet:
            click.echo("bnlint: every path given is excluded (--force-exclude); nothing to "
                       "check", err=True)
        sys.exit(EXIT_CLEAN)
    if stdin_filename:
        return [str(ctx.with_resource(files.standing_in(text, stdin_filename)))]
    return kept


def _generate_baseline(report, path: Path, quiet: bool) -> None:
    """Write the baseline and end the run: 0, or 2 when a model could not be checked (its
    findings are missing from the file)."""
    entries = baseline.write(report, path)
    _warn(report)
    for m in report.models:
        if m.status == "error":
            click.echo(f"bnlint: error: {m.spec}: {m.reason}", err=True)
    if not quiet:
        found = len(report.findings)
        click.echo(f"Wrote {found} finding{'s' * (found != 1)} ({entries} "
                   f"entr{'y' if entries == 1 else 'ies'}) to the baseline {path}.", err=True)
    sys.exit(EXIT_ERROR if report.has_errors else EXIT_CLEAN)


EPILOG = """\b
PATHS are .py files, folders (searched recursively), or specs naming a model:
  bnlint models/                        every model the files define
  bnlint 'models/vgg.py:VGG("VGG11")'   an expression run in that file
  bnlint 'torchvision.models:vgg11_bn()'  an expression in an installed module
\b
A plain file is imported only if its top level just defines things; a script that
would start work on import is skipped and named. Configure defaults in
[tool.bnlint] of pyproject.toml; silence one line with `# bnlint: ignore[BN001]`.
\b
In a project with findings already: `--generate-baseline FILE` records them, and
`--baseline FILE` (or `baseline` in [tool.bnlint]) then reports only new ones;
`per-file-ignores` in [tool.bnlint] turns rules off in some files. Editors pass the
text of a buffer on stdin: bnlint - --stdin-filename path/to/file.py --format concise
\b
Inputs: where a model must be run (to see what tracing cannot, or for --bench), its
forward's input is the first of: --example; example_input() in the model's file;
--input-shape; INPUT_SHAPE on the model's class or in its file; where one is a
must (--bench), a common shape found by trying some on a copy of the model.
  bnlint 'gnn.py:GIN()' --example 'gnn.py:GraphBatch(torch.randn(10, 6), [4, 6])'
  bnlint models/ --example 'torch:randn(2, 3, 32, 32)'
\b
Fixing: --diff shows the edits, --fix makes the safe ones, --unsafe-fixes adds the ones
that change what the model computes. --save-fixed DIR writes each fixed model (code and
weights) to a new folder in DIR; --save-folded DIR each model with its BatchNorms folded
into the layers before them, for deployment. After --fix removed biases, old checkpoints
load again with
  bnlint 'models/vgg.py:VGG("VGG11")' --convert-checkpoint old.pt new.pt
\b
Exit status: 0 clean, 1 findings (or --fix changed files, or --diff has edits to show;
0 with --exit-zero), 2 usage error, a model that failed to load, or a file --fix could
not write.
"""


@click.command(cls=_Command, context_settings={"help_option_names": ["-h", "--help"]},
               epilog=EPILOG)
@click.argument("paths", nargs=-1)
@click.option("--select", multiple=True, metavar="CODES",
              help="Only these rule codes or prefixes (comma-separated). Default: the default rules.")
@click.option("--ignore", multiple=True, metavar="CODES",
              help="Skip these rule codes or prefixes (comma-separated).")
@click.option("--exclude", multiple=True, metavar="PATTERN",
              help="Also skip files and folders matching this name or glob.")
@click.option("--static", is_flag=True,
              help="Only the rules that read scripts without running them: nothing is imported, "
                   "so neither torch nor your own packages are needed.")
@click.option("--fix", "apply_fixes", is_flag=True,
              help="Apply the safe fixes to your source files (see --diff to look first).")
@click.option("--unsafe-fixes", is_flag=True,
              help="With --fix, --diff or --save-fixed: also apply the unsafe fixes, which change "
                   "what a model computes or what a script does (`bnlint --list-rules`).")
@click.option("--diff", "show_diff", is_flag=True,
              help="Print the fixes as a unified diff and write nothing.")
@click.option("--save-fixed", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Write each model with fixes, as code and weights, to a new folder in DIR "
                   "(existing files are never replaced).")
@click.option("--save-folded", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Write each model in eval mode with every BatchNorm folded into the conv or "
                   "linear layer before it, as code and weights, to a new folder in DIR "
                   "(checked against the original; existing files are never replaced).")
@click.option("--example", metavar="FILE.py:EXPR",
              help="The input of every model's forward: EXPR, evaluated in FILE.py (or in an "
                   "importable module, package.module:EXPR), gives the forward's argument, a "
                   "tuple of arguments, or a tuple and a dict of keyword arguments. Comes "
                   "first of the inputs below.")
@click.option("--input-shape", callback=_input_shape, metavar="C,H,W",
              help="The shape of one input, without the batch dimension, for running the "
                   "models; an example_input() function in the model's file comes first, "
                   "INPUT_SHAPE after (see Inputs below).")
@click.option("--convert-checkpoint", "convert", nargs=2, metavar="OLD.pt NEW.pt",
              type=click.Path(dir_okay=False, path_type=Path),
              help="Make a state_dict saved before --fix removed biases load into the fixed "
                   "model (the one PATH names) with strict=True, computing what it did: each "
                   "removed bias is folded into BatchNorm's running mean. Writes NEW.pt.")
@click.option("--bench", is_flag=True,
              help="Train each fixable model and a fixed copy side by side for a short budget and "
                   "say whether the fixes help (every fix of the enabled rules, unsafe ones "
                   "included; nothing is written): final and held-out loss, time to target. "
                   "Safe fixes alone are verified output for output instead of trained. For "
                   "every model holding BatchNorm: what a missing .eval() costs.")
@click.option("--bench-exact", is_flag=True,
              help="With --bench: train also when every fix is safe and the outputs match.")
@click.option("--quick", is_flag=True,
              help=f"With --bench: {QUICK_SEEDS} seeds and half the steps (the report says what "
                   "that gives up).")
@click.option("--lr-sweep", is_flag=True,
              help="With --bench: also find the largest learning rate at which each trains in "
                   "every seed.")
@click.option("--init-scale", callback=_scales, metavar="FACTORS",
              help="With --bench: also train each model from its starting weights scaled by "
                   "each factor (e.g. 0.1,10) and say which still train.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.png",
              help="With --bench: plot the loss curves of every seed, the learning-rate sweep "
                   "and the mode check (needs matplotlib: pip install 'bnlint[plot]').")
@click.option("--data", metavar="MODULE:FUNCTION",
              help="With --bench: train on your data, from a function that returns a DataLoader "
                   "or (inputs, targets) tensors. Default: a synthetic task fitted to the model.")
@click.option("--steps", type=click.IntRange(1), default=BENCH_DEFAULTS["steps"],
              help="With --bench: training steps of each run. Default: as many as the models' "
                   f"compute allows ({MIN_STEPS} to {MAX_STEPS}), the same on any machine.")
@click.option("--seeds", type=click.IntRange(1),
              help="With --bench: runs of each model, each from its own weights and batches. "
                   f"Default: {BENCH_DEFAULTS['seeds']} ({QUICK_SEEDS} with --quick).")
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=BENCH_DEFAULTS["lr"],
              help="With --bench: the SGD learning rate (momentum 0.9). Default: picked by a "
                   "short range test on the original model (the report says which and why).")
@click.option("--time-budget", type=click.FloatRange(0, min_open=True),
              default=BENCH_DEFAULTS["time_budget"], metavar="SECONDS",
              help="With --bench: stop each model's benchmark within this time, set-up "
                   "included, by cutting the steps of every run alike (the report says so). "
                   "Default: no limit.")
@click.option("--device", metavar="DEVICE",
              help="With --bench: where to train. Default: cuda when available, else cpu.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True,
              help="Output format: text for people (each finding with its line of code), concise "
                   "(one line each), json, jsonl (one finding a line; with --output-file, written "
                   "as found), sarif (code scanning), github (annotations).")
@click.option("-j", "--jobs", type=click.IntRange(1), metavar="N",
              help="Worker processes that analyse the models of a repository run (models from "
                   "more than one file, or --jobs above 1). Default: the number of CPUs, at most "
                   "one per file that may define models. The report is the same for any N.")
@click.option("--model-timeout", type=click.FloatRange(0, min_open=True), metavar="SECONDS",
              default=workers.DEFAULT_TIMEOUT, show_default=True,
              help="In a repository run: stop a model (its file's import, its build, its "
                   "analysis) after this long, report it as an error and go on.")
@click.option("--model-memory", callback=_size, metavar="SIZE",
              help="In a repository run: stop a model whose worker's resident memory passes "
                   "SIZE (4G, 512M), report it as an error and go on. Default: half the "
                   "machine's memory.")
@click.option("--one-per-class", is_flag=True,
              help="Check one model of each class, the first the files name (a quick pass over "
                   "files with many factories of one architecture); the others are skipped.")
@click.option("--config", "config_file", metavar="FILE",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Take the settings from the [tool.bnlint] table of FILE, not from the nearest "
                   "pyproject.toml.")
@click.option("--baseline", "baseline_file", type=click.Path(dir_okay=False, path_type=Path),
              metavar="FILE",
              help="Report only the findings that FILE (written by --generate-baseline) does not "
                   "hold; the summary says how many it hid. Default: `baseline` in [tool.bnlint].")
@click.option("--generate-baseline", type=click.Path(dir_okay=False, path_type=Path),
              metavar="FILE",
              help="Write every finding to FILE, to be committed, and exit 0: later runs with "
                   "--baseline FILE report only new ones. Findings since fixed drop out.")
@click.option("--force-exclude", is_flag=True,
              help="Skip paths named on the command line that `exclude` (or the folders always "
                   "skipped) match, as for files found in a folder: for pre-commit, which names "
                   "each file.")
@click.option("--statistics", is_flag=True,
              help="Print one line per rule, with its count, code and name, in place of the "
                   "findings (as text, or JSON with --format json).")
@click.option("-o", "--output-file", type=click.Path(dir_okay=False, path_type=Path),
              metavar="FILE", help="Write the report to FILE instead of standard output.")
@click.option("--exit-zero", is_flag=True,
              help="Exit with status 0 when there are findings; errors still exit with 2.")
@click.option("-q", "--quiet", is_flag=True,
              help="Print only the findings and the models that failed: no summary, no skipped "
                   "or partly analysed models. Errors and warnings about the run remain.")
@click.option("--color", type=click.Choice(COLORS), default="auto", show_default=True,
              help="Style the text output; auto: on a terminal, unless NO_COLOR is set.")
@click.option("--stdin-filename", metavar="PATH",
              help="With - as the only PATH: check the text read from standard input as if it "
                   "were the file PATH (editors use this): its script rules run on it, and its "
                   "models are imported under that name. Findings name PATH.")
@click.option("-v", "--verbose", is_flag=True,
              help="Show tracebacks of failing models and every model analysed; in a repository "
                   "run, each model on stderr as it finishes, with its time and peak memory.")
@click.option("--explain", metavar="CODE", callback=_explain, expose_value=False, is_eager=True,
              help="Explain a rule: what it finds, why it matters, what to write instead.")
@click.option("--list-rules", is_flag=True, callback=_list_rules, expose_value=False,
              is_eager=True, help="List every rule and exit.")
@click.version_option(__version__, "--version", prog_name="bnlint")
def main(paths, select, ignore, exclude, static, apply_fixes, unsafe_fixes, show_diff, save_fixed,
         save_folded, convert, bench, bench_exact, quick, lr_sweep, init_scale, plot, example,
         input_shape, data, steps, seeds, lr, time_budget, device, fmt, jobs, model_timeout,
         model_memory, one_per_class, config_file, baseline_file, generate_baseline,
         force_exclude, statistics, output_file, exit_zero, quiet, color, stdin_filename,
         verbose):
    """Find BatchNorm mistakes in PyTorch models: a biased layer feeding BatchNorm (BN001),
    an activation before BatchNorm (BN002), and more (`bnlint --list-rules`)."""
    ctx = click.get_current_context()
    _check_run_options(paths, stdin_filename, generate_baseline, statistics, fmt,
                       apply_fixes or show_diff or save_fixed or bench)
    if not paths and not stdin_filename:
        raise click.UsageError("give the files, folders or model specs to check, e.g. `bnlint .`")
    if unsafe_fixes and not (apply_fixes or show_diff or save_fixed):
        raise click.UsageError("--unsafe-fixes goes with --fix, --diff or --save-fixed")
    if show_diff and apply_fixes:
        raise click.UsageError("--diff shows the fixes without writing them; --fix writes them: "
                               "choose one")
    if show_diff and fmt not in ("text", "concise"):
        raise click.UsageError("--diff prints a unified diff; it does not go with --format")
    if static and save_folded:
        raise click.UsageError("--static builds no model, so it has none to fold for "
                               "--save-folded")
    if static and (example or input_shape):
        raise click.UsageError("--static runs no model, so it takes no --example or "
                               "--input-shape")
    _check_bench(click.get_current_context(), bench, fmt, apply_fixes or show_diff or save_fixed,
                 plot)
    if convert and (len(paths) != 1 or apply_fixes or show_diff or save_fixed or save_folded
                    or bench or stdin_filename):
        raise click.UsageError("--convert-checkpoint takes one PATH, the fixed model, and no "
                               "--fix, --diff, --save-fixed, --save-folded, --bench or "
                               "--stdin-filename")
    fixing = bool(apply_fixes or show_diff or save_fixed)
    in_process = fixing or bench or bool(save_folded)
    if in_process and any(ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE
                          for name in ("jobs", "model_timeout", "model_memory")):
        raise click.UsageError("--jobs, --model-timeout and --model-memory set the workers of a "
                               "check; --fix, --diff, --save-fixed, --save-folded and --bench "
                               "run in one process")
    if output_file is not None:
        _write_output_to(ctx, output_file)
    entries = None
    folded: list[str] = []  # what --save-folded did
    refused = False  # a file --fix could not write
    benched: list = []
    findings_status = EXIT_CLEAN if exit_zero else EXIT_FINDINGS
    try:
        if convert:
            _convert_checkpoint(paths[0], *convert)
            sys.exit(EXIT_CLEAN)
        settings = load_config(file=config_file)
        ctx.with_resource(applying_per_file_ignores(settings))
        paths = _paths_to_check(ctx, paths, stdin_filename, settings, exclude, force_exclude, quiet)
        from bnlint.lint import lint_specs
        from bnlint.sourcefix import SourceFixer, fix_files

        select, ignore = _codes(select) or settings.select, _codes(ignore) + settings.ignore
        given = _load_example(example, verbose)

        def lint(fixer, benched=None, folded=None, pool=None):
            visit = _visitor(fixer, benched)
            if folded is not None:
                visit = _also_fold(visit, save_folded, given, input_shape, folded)
            return lint_specs(paths, select=select, ignore=ignore,
                              exclude=list(exclude) + settings.exclude, static=static,
                              on_model=visit, on_script=fixer.visit_script, example=given,
                              input_shape=input_shape,
                              weights=fixing or bench or bool(save_folded),
                              one_per_class=one_per_class, workers=pool)

        # every run plans the source fixes: the hints count only what --fix would change
        fixer = SourceFixer(enabled_codes(select, ignore), unsafe=unsafe_fixes, named=paths,
                            save_to=save_fixed, graph_fix=fixing)
        units = [] if in_process or static else workers.units(
            paths, list(exclude) + settings.exclude)
        stream = sys.stdout if fmt == "jsonl" and output_file is not None else None
        with _progress(len(units), verbose, stream) as watch:
            model_files = sum(map(workers.defines_models, units))
            pool = None if model_files < 2 and not (jobs or 1) > 1 else workers.Workers(
                jobs or min(os.cpu_count() or 1, model_files), timeout=model_timeout,
                memory=model_memory or _half_the_memory(), example=given,
                input_shape=input_shape, fixer=fixer, settings=settings, watch=watch)
            # fold on the first lint only: --fix lints again, and a folder is never written twice
            report = lint(fixer, benched if bench else None, folded if save_folded else None,
                          pool)
        for line in folded:
            click.echo(line, err=True)
        if apply_fixes:
            report, plan, refused = fix_files(report, fixer, lint)
        else:
            plan = fixer.plan()
            report = plan.mark(report)
        if bench:
            entries = _bench(benched, report, select, ignore, dict(
                lr_sweep=lr_sweep, input_shape=input_shape, data=data, steps=steps, seeds=seeds,
                lr=lr, time_budget=time_budget, device=device, exact=bench_exact, quick=quick,
                init_scales=init_scale))
        if generate_baseline:
            _generate_baseline(report, generate_baseline, quiet)
        if baseline_file or settings.baseline:
            report = baseline.apply(report, baseline_file or settings.baseline)
    except (ConfigError, UnknownRuleError, baseline.BaselineError, workers.WorkerError) as exc:
        click.echo(f"bnlint: error: {exc}", err=True)
        sys.exit(EXIT_ERROR)
    except KeyboardInterrupt:
        # 130, as shells report Ctrl-C: never 1, which would read as "findings"
        click.echo("bnlint: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:  # noqa: BLE001 - a bug of ours: one line, traceback on request
        click.echo(f"bnlint: internal error: {exc!r}", err=True)
        if verbose:
            click.echo(traceback.format_exc(), err=True)
        else:
            click.echo("Run again with --verbose for the traceback.", err=True)
        sys.exit(EXIT_ERROR)
    if show_diff:
        click.echo(plan.diff(), nl=False)
        _warn(report)
        for m in report.models:
            if m.status == "error":
                click.echo(f"bnlint: error: {m.spec}: {m.reason}", err=True)
        _tell([*plan.notes, *plan.explained(unsafe_fixes)], fixer.saved, plan.hidden)
        files = len(plan.changes)
        if files and fixer.exposed:
            click.echo(f"These edits make room for {fixer.exposed} more "
                       f"fix{'es' * (fixer.exposed != 1)}: --fix checks the edited files again "
                       "and makes what it can in the same run.", err=True)
        click.echo(f"Would apply {plan.fixes} fix{'es' * (plan.fixes != 1)} to {files} "
                   f"file{'s' * (files != 1)}." if files else "No fixes to apply.", err=True)
        sys.exit(EXIT_ERROR if report.has_errors else findings_status if files else EXIT_CLEAN)
    if fmt == "jsonl" and output_file is not None:
        sys.stdout.seek(0)  # what was written as found gives way to the report
        sys.stdout.truncate()
    if entries is not None and fmt == "json":
        render_bench.render_json(report, entries, sys.stdout)
    else:
        render(report, fmt, sys.stdout, verbose=verbose, color=color, quiet=quiet,
               statistics=statistics)
    _warn(report)
    if entries is not None:
        _show_bench(entries, fmt, plot, verbose)
    if apply_fixes:
        _tell(plan.notes, fixer.saved, plan.hidden)
        _tell_checkpoints(plan)
    elif save_fixed:
        _tell(fixer.notes, fixer.saved, fixer.hidden_graph)
    if report.has_errors or refused:
        if fmt in ("json", "jsonl", "sarif"):  # stdout is for programs: say on stderr what failed
            for m in report.models:
                if m.status == "error":
                    click.echo(f"bnlint: error: {m.spec}: {m.reason}", err=True)
        sys.exit(EXIT_ERROR)
    if entries and any(e.error for e in entries):
        sys.exit(EXIT_ERROR)
    # like a formatter in a pre-commit hook, --fix fails the run that changed files
    sys.exit(findings_status if report.findings or (apply_fixes and plan.changes) else EXIT_CLEAN)
