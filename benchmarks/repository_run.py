"""A repository run, with one worker and with more: wall time, the peak resident memory of every
process (bnlint's and its workers', each process's high-water mark read from /proc), the models
checked, every model lost (an error that is a limit or a worker that died), and the models during
which a worker's resident memory peaked highest (from ``-v``).

    python benchmarks/repository_run.py                # 32 model files made from the fixtures
    python benchmarks/repository_run.py FOLDER         # any folder of model files
    python benchmarks/repository_run.py --timm --python /path/to/venv/bin/python
                                                       # timm's models/ folder, with the python
                                                       # that has timm (and torchvision) installed

It prints one line per --jobs value and the ratio of the first run's time to each other's.
Linux only (it reads /proc). The machine's load average is printed too: on a shared machine,
the ratio means something only when nothing else was running.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bnlint.workers import parse_size, peak

ROOT = Path(__file__).resolve().parents[1]
# fixture files whose models a repository run checks; copied under new names to make a repository
MODEL_FILES = ("act_before_bn.py", "clean.py", "deep_plain.py", "fixable.py", "mobilenetv2.py",
               "resnet18.py", "vgg.py", "wrong_axis.py")


def make_repository(folder: Path, files: int) -> Path:
    for number in range(files):
        name = MODEL_FILES[number % len(MODEL_FILES)]
        shutil.copy(ROOT / "fixtures" / name, folder / f"{Path(name).stem}_{number}.py")
    return folder


def _descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        try:
            with open(f"/proc/{parent}/task/{parent}/children") as children:
                kids = [int(k) for k in children.read().split()]
        except OSError:
            kids = []
        found.update(kids)
        todo += kids
    return found


def _is_worker(pid: int) -> bool:
    """A worker process (multiprocessing's resource tracker is a child too, and is not one)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return b"spawn_main" in cmdline.read()
    except OSError:
        return False


def run(python: str, folder: Path, jobs: int, extra: list[str]) -> dict:
    """One bnlint run over ``folder``: its time, every process's peak resident set, the report."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out, \
            tempfile.TemporaryFile("w+") as log:
        command = [python, "-m", "bnlint", str(folder), "--format", "json", "-o", out.name,
                   "--jobs", str(jobs), "-v", *extra]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        start = time.perf_counter()
        process = subprocess.Popen(command, env=env, stderr=log, text=True)
        peaks: dict[int, int] = {}
        while process.poll() is None:
            for pid in {process.pid} | {p for p in _descendants(process.pid) if _is_worker(p)}:
                high = peak(pid)
                if high:
                    peaks[pid] = max(peaks.get(pid, 0), high)
            time.sleep(0.2)
        seconds = time.perf_counter() - start
        log.seek(0)
        stderr = log.read()
        report = json.loads(Path(out.name).read_text() or "{}")
    if not report:
        sys.exit(f"bnlint exited with {process.returncode} and no report:\n{stderr[-2000:]}")
    models = report["models"]
    lost = [m for m in models if m["status"] == "error" and any(
        word in (m["reason"] or "") for word in ("--model-timeout", "--model-memory",
                                                 "worker process died"))]
    by_model = model_peaks(stderr)
    return {"jobs": jobs, "seconds": seconds, "status": process.returncode,
            "parent_peak": peaks.get(process.pid, 0),
            # a worker starts its high-water mark again at each model: the polls may miss a
            # peak that -v has
            "worker_peak": max([p for pid, p in peaks.items() if pid != process.pid]
                               + [size for size, _ in by_model], default=0),
            "processes": len(peaks), "analysed": report["summary"]["models_analysed"],
            "failed": report["summary"]["models_failed"], "lost": lost,
            "errors": [m for m in models if m["status"] == "error"],
            "findings": report["summary"]["findings"], "model_peaks": by_model}


def model_peaks(log: str) -> list[tuple[int, str]]:
    """(peak, spec) of every model ``-v`` logged with its worker's peak memory, highest first."""
    found = re.findall(r"^(.*?): .*, peak memory (\S+)\)$", log, re.MULTILINE)
    return sorted(((parse_size(size), spec) for spec, size in found), reverse=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path)
    parser.add_argument("--timm", action="store_true", help="timm's models/ folder")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--files", type=int, default=32,
                        help="model files of the repository made from the fixtures")
    parser.add_argument("--top", type=int, default=5,
                        help="how many of the models with the highest peak memory to list")
    parser.add_argument("bnlint_options", nargs=argparse.REMAINDER,
                        help="after --: more options for bnlint")
    args = parser.parse_args()
    extra = [a for a in args.bnlint_options if a != "--"]
    with tempfile.TemporaryDirectory() as made:
        if args.timm:
            where = subprocess.run([args.python, "-c", "import os, timm; "
                                    "print(os.path.dirname(timm.__file__))"],
                                   capture_output=True, text=True, check=True).stdout.strip()
            folder = Path(where) / "models"
        else:
            folder = args.folder or make_repository(Path(made), args.files)
        files = sum(1 for _ in folder.rglob("*.py"))
        print(f"{folder}: {files} .py files; {os.cpu_count()} CPUs, load average "
              f"{os.getloadavg()[0]:.2f} before the runs")
        runs = []
        for jobs in args.jobs:
            result = run(args.python, folder, jobs, extra)
            runs.append(result)
            print(f"--jobs {jobs}: {result['seconds']:.1f} s, {result['analysed']} models "
                  f"analysed, {result['failed']} failed ({len(result['lost'])} lost to a limit or "
                  f"a crash), {result['findings']} findings; peak resident memory "
                  f"{result['parent_peak'] / 2**30:.2f} GB (bnlint), "
                  f"{result['worker_peak'] / 2**30:.2f} GB (the largest of "
                  f"{result['processes'] - 1} worker processes, replaced ones included); "
                  f"load average now "
                  f"{os.getloadavg()[0]:.2f}", flush=True)
            for size, spec in result["model_peaks"][:args.top]:
                print(f"    peak {size / 2**30:.2f} GB: {spec}")
            for model in result["errors"]:
                print(f"    {'lost' if model in result['lost'] else 'failed'}: {model['spec']}: "
                      f"{model['reason']}")
        for other in runs[1:]:
            print(f"--jobs {other['jobs']} is {runs[0]['seconds'] / other['seconds']:.2f}x as fast "
                  f"as --jobs {runs[0]['jobs']}")


if __name__ == "__main__":
    main()
