"""Peak memory of linting a 1-billion-parameter model, next to what building it costs.

Writes a model of sixteen 8192-wide Linear + BatchNorm1d + ReLU blocks (1.07 billion
parameters, 4.3 GB of float32 weights) to a temporary file, then runs, one after the other,
  bnlint big.py
  python -c "import torch; <import big.py and build Big()>"
  python -c "import torch"
and prints the peak resident memory and the wall time of each, and the ratio of the first two
peaks (the aim is at most 0.25: linting builds the model on the meta device, without weights).
Each peak is that one child process's own (``os.wait4``)::

    python benchmarks/lint_memory.py [--repeats 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from startup import bnlint_command

WIDTH, DEPTH = 8192, 16
MODEL = f'''"""A 1-billion-parameter MLP; every Linear keeps a bias that BatchNorm cancels."""
import torch.nn as nn


class Big(nn.Module):
    def __init__(self, width={WIDTH}, depth={DEPTH}):
        super().__init__()
        layers = []
        for _ in range(depth):
            layers += [nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU()]
        self.body = nn.Sequential(*layers)

    def forward(self, x):
        return self.body(x)
'''
PARAMETERS = DEPTH * (WIDTH * WIDTH + WIDTH + 2 * WIDTH)


def peak(command: list[str], cwd: Path, expect: set[int]) -> tuple[float, float]:
    """(peak resident memory in GB, wall time in seconds) of one run of ``command``."""
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code not in expect:
        raise SystemExit(f"{' '.join(command)} exited {code}:\n{process.stderr.read().decode()}")
    process.stderr.close()
    return usage.ru_maxrss / 2**20, elapsed  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        (folder / "big.py").write_text(MODEL, encoding="utf-8")
        runs = {
            "bnlint big.py": ([*bnlint_command(), "big.py"], {1}),
            "python -c 'import torch; build Big()'": (
                [sys.executable, "-c", "import torch, big; big.Big()"], {0}),
            "python -c 'import torch'": ([sys.executable, "-c", "import torch"], {0}),
        }
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, (command, expect) in runs.items():
                results[name].append(peak(command, folder, expect))
    print(f"model: {DEPTH} x (Linear({WIDTH}, {WIDTH}) + BatchNorm1d({WIDTH})), "
          f"{PARAMETERS / 1e9:.2f} billion parameters; {args.repeats} run(s) of each")
    peaks = {}
    for name, measured in results.items():
        peaks[name] = max(p for p, _ in measured)
        print(f"{name}: peak {peaks[name]:.2f} GB, "
              f"median {statistics.median(t for _, t in measured):.1f} s")
    lint, build = list(peaks.values())[:2]
    print(f"peak ratio bnlint / build: {lint / build:.3f} (aim: <= 0.25)")


if __name__ == "__main__":
    main()
