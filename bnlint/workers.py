"""A repository run: the models analysed in worker processes, each model under a time limit and
a resident-memory limit, so that one model that hangs, or grows past what the machine holds,
costs that model and not the run.

The parent process never imports the user's code. It hands out units (a file that may define
models, or a ``file.py:EXPR`` spec) to ``jobs`` workers; a worker imports the unit, then builds
and analyses its models one at a time with ``lint.check_model``, as a run in one process does,
and sends each model's outcome back as soon as it has it. The parent watches each worker's
clock and resident set (read from ``/proc`` ten times a second, since address-space limits do
not work with torch): a worker past a limit is killed, the model is reported as an error naming
the limit, and a fresh worker goes on with the unit's next model. Outcomes are put together in
the order of the units, so the report is the same whatever the number of jobs.
"""

from __future__ import annotations

import ast
import contextlib
import gc
import multiprocessing
import os
import re
import signal
import sys
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path

from bnlint import files, source
from bnlint.files import read_source
from bnlint.findings import Finding, ModelResult
from bnlint.lint import Checked, SameModel, check_model, preparer
from bnlint.load import MODEL_HINTS, python_files, runs_code_on_import, split_spec

POLL = 0.1  # seconds between two looks at the workers' clocks and resident sets
DEFAULT_TIMEOUT = 300.0


def machine_memory() -> int | None:
    """Bytes of physical memory, where the system says."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def parse_size(text: str) -> int:
    """``4G``, ``512M``, ``1.5g``, ``800MB`` or a number of bytes -> bytes (K, M, G, T count
    by 1024). Raises ValueError."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([kmgt]?)i?b?\s*", text, re.IGNORECASE)
    if not match or float(match[1]) <= 0:
        raise ValueError(f"{text!r} is not a size; write it like 4G or 512M")
    return int(float(match[1]) * 1024 ** " kmgt".index(match[2].lower() or " "))


def format_size(size: float) -> str:
    for unit in ("B", "K", "M", "G"):
        if size < 1024 or unit == "G":
            break
        size /= 1024
    return f"{size:.0f}{unit}" if unit == "B" or size >= 100 else f"{size:.1f}{unit}"


def resident(pid: int) -> int | None:
    """The resident set of process ``pid`` in bytes (Linux), or None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def reset_peak() -> None:
    """Start this process's resident high-water mark again from its resident set (Linux; a
    no-op where the system does not allow it)."""
    with contextlib.suppress(OSError):
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")


def peak(pid: int | str = "self") -> int | None:
    """The resident high-water mark of process ``pid`` (this one by default) in bytes
    (Linux), or None."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def units(specs: Iterable[str], exclude: Iterable[str] = ()) -> list[str]:
    """What the workers share out, in the order a run in one process loads them: each file
    that may define a model (it mentions torch or a Module), each ``file.py:EXPR`` or
    ``module:EXPR`` spec. Paths that do not exist are left to ``load``, which reports them."""
    found: dict[str, None] = {}
    seen: set[Path] = set()
    for spec in dict.fromkeys(specs):
        target, expr = split_spec(spec)
        if expr is not None:
            found[spec] = None
            continue
        if not Path(target).exists():
            continue
        for file in python_files(Path(target), exclude):
            if file.resolve() in seen or file.suffix != ".py":
                continue
            seen.add(file.resolve())
            try:
                text = read_source(file)
            except (OSError, UnicodeDecodeError, SyntaxError):
                text = "torch"  # the worker's load reports why it cannot be read
            if any(hint in text for hint in MODEL_HINTS):
                found[str(file)] = None
    return list(found)


def defines_models(unit: str) -> bool:
    """Whether a unit may give models to check: a spec with an expression, or a file that is
    not a script (one that does work on import is never imported)."""
    if split_spec(unit)[1] is not None:
        return True
    try:
        return runs_code_on_import(ast.parse(read_source(unit))) is None
    except (OSError, UnicodeDecodeError, SyntaxError, RecursionError):
        return True  # its worker reports why it cannot be read


@dataclass
class Setup:
    """What every worker needs to check models as a run in one process does: the rules'
    settings, the inputs, the template of the fix planner, the per-file ignores and the copies
    of stdin that stand for files."""

    codes: set[str]
    exclude: list[str]
    one_per_class: bool
    example: object = None
    input_shape: tuple[int, ...] | None = None
    fixer: object = None  # a SourceFixer that has seen nothing, or None
    settings: object = None  # a config.Config whose per-file-ignores apply, or None
    stand_ins: dict[str, str] = field(default_factory=dict)
    usage: bool = False  # whether BN900 runs, and needs the suppressions used


@dataclass
class Outcome:
    """One model's outcome, as a worker sends it: what ``lint.check_model`` gave, the
    suppression comments used and lines seen (for BN900), the fix planner's record, and the
    worker's peak resident memory while it built and analysed the model."""

    checked: object  # lint.Checked
    used: set = field(default_factory=set)
    seen: set = field(default_factory=set)
    fixer: object = None
    peak: int | None = None


@dataclass
class Watch:
    """What a run shows while it goes: ``begin(spec)`` when a worker starts on a model,
    ``finished(spec, results, findings, seconds, peak)`` when its outcome is in (``peak``: the
    worker's peak resident memory in bytes meanwhile, None where unknown), ``unit_done()``
    when a unit has no model left, ``found(findings)`` when the script rules found some (in
    this process, before the workers start). Each does nothing unless given."""

    begin: object = None
    finished: object = None
    unit_done: object = None
    found: object = None


class _Described:
    """An example input as the report shows it, without its tensors."""

    def __init__(self, example):
        self.text, self.origin = example.describe(), example.origin

    def describe(self) -> str:
        return self.text


class WorkerError(Exception):
    """The workers cannot run at all (one died before it could take a model)."""


class Workers:
    """``lint_specs(workers=...)``: analyse the models in ``jobs`` worker processes under
    ``timeout`` seconds and ``memory`` bytes of resident set each (None: no limit)."""

    def __init__(self, jobs: int, *, timeout: float | None = DEFAULT_TIMEOUT,
                 memory: int | None = None, example=None, input_shape=None, fixer=None,
                 settings=None, watch: Watch | None = None):
        self.jobs, self.timeout, self.memory = max(1, jobs), timeout, memory
        self.example, self.input_shape = example, input_shape
        self.fixer, self.settings = fixer, settings
        self.watch = watch or Watch()

    units = staticmethod(units)

    def check(self, units: list[str], codes: set[str], usage, exclude, one_per_class: bool,
              findings: list[Finding] = ()):
        """Every unit's models checked, put together in the order of ``units``; ``usage``
        (BN900's record) and the fix planner take in what the workers saw. ``findings``, the
        script rules', are shown as found before the models' (``Watch.found``)."""
        if self.watch.found:
            self.watch.found(findings)
        setup = Setup(set(codes), list(exclude), one_per_class, self.example, self.input_shape,
                      self.fixer.again() if self.fixer is not None else None, self.settings,
                      files.stand_ins(), usage is not None)
        done = _Pool(self, setup, units).run()
        checked = Checked()
        for unit in done:
            if unit.loaded is not None:
                checked.add(unit.loaded)
        for unit in done:
            for index in sorted(unit.models):
                outcome = unit.models[index]
                checked.add(outcome.checked)
                if usage is not None:
                    usage.used |= outcome.used
                    usage.seen |= outcome.seen
                if self.fixer is not None and outcome.fixer is not None:
                    self.fixer.absorb(outcome.fixer)
        return checked


@dataclass
class _Unit:
    spec: str
    loaded: object = None  # lint.Checked: the load's results and classes needing arguments
    count: int = 0  # its candidates
    models: dict[int, Outcome] = field(default_factory=dict)


class _Worker:
    def __init__(self, context, setup: Setup):
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, setup), daemon=True)
        self.process.start()
        child.close()
        self.ready = False
        self.unit: int | None = None  # the unit it works on
        self.next = 0  # the unit's next candidate
        self.current: tuple[int, str] | None = None  # (candidate, spec); -1 while importing
        self.since = 0.0

    def give(self, unit: int, spec: str, start: int) -> None:
        self.unit, self.next = unit, start
        self.current, self.since = (-1, spec), time.monotonic()
        self.conn.send((unit, spec, start))

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.conn.close()


class _Pool:
    def __init__(self, workers: Workers, setup: Setup, specs: list[str]):
        self.limits, self.watch, self.setup = workers, workers.watch, setup
        self.jobs = max(1, min(workers.jobs, len(specs)))
        self.units = [_Unit(spec) for spec in specs]
        self.pending = deque((i, 0) for i in range(len(specs)))
        self.context = multiprocessing.get_context("spawn")
        self.pool: list[_Worker] = []

    def run(self) -> list[_Unit]:
        try:
            while self.pending or any(w.unit is not None for w in self.pool):
                self._hand_out()
                alive = {w.conn: w for w in self.pool}
                for conn in wait(list(alive), timeout=POLL):
                    worker = alive[conn]
                    try:
                        message = conn.recv()
                    except (EOFError, OSError):
                        self._lost(worker, _died(worker.process))
                        continue
                    self._take(worker, message)
                self._police()
        finally:
            for worker in self.pool:
                worker.stop()
        return self.units

    def _hand_out(self) -> None:
        while len(self.pool) < self.jobs and len(self.pool) < len(self.pending) + sum(
                w.unit is not None for w in self.pool):
            self.pool.append(_Worker(self.context, self.setup))
        for worker in self.pool:
            if self.pending and worker.ready and worker.unit is None:
                unit, start = self.pending.popleft()
                worker.give(unit, self.units[unit].spec, start)

    def _take(self, worker: _Worker, message) -> None:
        kind, *rest = message
        if kind == "ready":
            worker.ready = True
        elif kind == "loaded":
            loaded, count = rest
            unit = self.units[worker.unit]
            if unit.loaded is None:
                unit.loaded, unit.count = loaded, count
            worker.current = None
        elif kind == "begin":
            index, spec = rest
            worker.current, worker.since = (index, spec), time.monotonic()
            if self.watch.begin:
                self.watch.begin(spec)
        elif kind == "model":
            index, outcome = rest
            self.units[worker.unit].models[index] = outcome
            self._finished(worker.current[1], outcome.checked.results,
                           outcome.checked.findings, time.monotonic() - worker.since,
                           outcome.peak)
            worker.current, worker.next = None, index + 1
        elif kind == "done":
            worker.unit, worker.current = None, None
            if self.watch.unit_done:
                self.watch.unit_done()

    def _finished(self, spec: str, results: list[ModelResult], findings: list[Finding],
                  seconds: float, peak: int | None = None) -> None:
        if self.watch.finished:
            self.watch.finished(spec, results, findings, seconds, peak)

    def _police(self) -> None:
        now = time.monotonic()
        for worker in list(self.pool):
            if worker.current is None:
                continue
            doing = "importing the file" if worker.current[0] == -1 else "building or analysing it"
            if self.limits.timeout is not None and now - worker.since > self.limits.timeout:
                self._lost(worker, f"stopped at --model-timeout {self.limits.timeout:g} s, "
                                   f"still {doing}")
                continue
            rss = resident(worker.process.pid) if self.limits.memory is not None else None
            if rss is not None and rss > self.limits.memory:
                self._lost(worker, f"stopped at --model-memory {format_size(self.limits.memory)}"
                                   f" while {doing}: its worker's resident memory reached "
                                   f"{format_size(rss)}")

    def _lost(self, worker: _Worker, why: str) -> None:
        """``worker`` is gone or must go: what it was on fails with ``why`` (the file, while
        importing it; else the model), and the unit's next models go to a fresh worker."""
        worker.stop()
        self.pool.remove(worker)
        if not worker.ready:
            raise WorkerError(f"a worker process could not start: {why}")
        if worker.unit is None:
            return
        unit = self.units[worker.unit]
        index, spec = worker.current or (worker.next, None)
        if index == -1:
            label = files.display_path(spec) if Path(spec).exists() else spec
            unit.loaded = Checked([ModelResult(label, "error", why)])
        elif spec is not None:
            result = ModelResult(spec, "error", why)
            unit.models[index] = Outcome(Checked([result]))
            self._finished(spec, [result], [], time.monotonic() - worker.since)
            index += 1
        if index != -1 and (unit.loaded is None or index < unit.count):
            self.pending.appendleft((worker.unit, index))
        elif self.watch.unit_done:
            self.watch.unit_done()


def _died(process) -> str:
    process.join(1)
    code = process.exitcode
    how = (f"killed by signal {-code}" if code is not None and code < 0 else
           f"exit status {code}" if code is not None else "no exit status")
    return (f"its worker process died ({how}) while it was built or analysed; the system may "
            "have killed it for memory")


# --- in the worker -----------------------------------------------------------------------------

def _serve(conn, setup: Setup) -> None:
    """A worker: import what every model needs, then check the units the parent sends."""
    os.dup2(2, 1)  # what the user's code prints goes to stderr, as in a run in one process
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the parent, which ends us
    from bnlint import suppressions

    with contextlib.suppress(ImportError):  # without torch, each file's import says so
        import torch  # noqa: F401 - once, before the first model's clock starts

    prepare = preparer(setup.example, setup.input_shape, weights=False)
    with contextlib.ExitStack() as stack:
        stack.enter_context(files.standing_for(setup.stand_ins))
        if setup.settings is not None:
            stack.enter_context(suppressions.applying_per_file_ignores(setup.settings))
        stack.enter_context(contextlib.redirect_stdout(sys.stderr))
        conn.send(("ready",))
        while True:
            try:
                task = conn.recv()
            except (EOFError, KeyboardInterrupt):
                return
            _check_unit(conn, setup, prepare, *task)
            conn.send(("done",))


def _check_unit(conn, setup: Setup, prepare, unit: int, spec: str, start: int) -> None:
    from bnlint.load import load
    from bnlint.suppressions import Usage

    loaded = load([spec], setup.exclude)
    conn.send(("loaded", Checked(list(loaded.results), needs_arguments={
        source.class_key(cls): result for cls, result in loaded.needs_arguments.items()}),
        len(loaded.candidates)))
    same = SameModel(setup.one_per_class)
    for index in range(start, len(loaded.candidates)):
        candidate = loaded.candidates[index]
        conn.send(("begin", index, candidate.spec))
        reset_peak()
        usage = Usage() if setup.usage else None
        fixer = setup.fixer.again() if setup.fixer is not None else None
        checked = check_model(candidate, setup.codes, prepare, same, usage,
                              fixer.visit_model if fixer is not None else None)
        for result in checked.results:
            if result.example is not None:
                result.example = _Described(result.example)
        conn.send(("model", index, Outcome(checked, usage.used if usage else set(),
                                           usage.seen if usage else set(),
                                           fixer.portable() if fixer is not None else None,
                                           peak())))
        gc.collect()  # the model is released: its graphs hold cycles
