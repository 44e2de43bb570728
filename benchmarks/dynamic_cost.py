"""What the run-time tracer costs on a model that needs it, next to fx on its traceable twin.

The model is the bundled stacked hourglass (`fixtures/see_through_assert.py`): the shape
`assert` in its conv wrapper stops torch.fx, so `bnlint.check(model, example=...)` records the
whole model by running it on fake tensors. Its twin is the same file without that assert line,
which fx traces in one graph. Printed: the median time of each over alternating runs, after one
warm-up run each (also of fx alone on the asserting model, which retraces it once per opaque
wrapper it finds), their ratio, and what the first run in a fresh process costs, where fake
tensors (and the meta kernels they run, e.g. BatchNorm's) import torch's compiler stack
(``torch._dynamo``) once::

    python benchmarks/dynamic_cost.py [--repeats 7] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

import torch

import bnlint
from bnlint.inputs import Example
from bnlint.source import recording
from bnlint.trace import trace_model

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "fixtures" / "see_through_assert.py"
ASSERT = '        assert x.size()[1] == self.inp_dim, "{} {}".format(x.size()[1], self.inp_dim)\n'


def load(name: str, text: str):
    module = types.ModuleType(name)
    module.__file__ = str(FIXTURE)
    exec(compile(text, str(FIXTURE), "exec"), module.__dict__)  # noqa: S102 - our own fixture
    return module


def models():
    text = FIXTURE.read_text()
    assert ASSERT in text, "the fixture's assert line changed"
    with recording():
        asserting = load("asserting", text).StackedHourglass()
        twin = load("twin", text.replace(ASSERT, "")).StackedHourglass()
    example = Example((torch.randn(2, 3, 32, 32),), {}, "benchmark")
    return asserting, twin, example


def first_run_seconds() -> float:
    """One dynamic check in a fresh interpreter, torch already imported."""
    code = ("import sys, time, torch; sys.path.insert(0, 'benchmarks'); import dynamic_cost; "
            "a, _, e = dynamic_cost.models(); t = time.perf_counter(); "
            "dynamic_cost.bnlint.check(a, example=e); print(time.perf_counter() - t)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, check=True)
    return float(done.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    options = parser.parse_args()
    torch.set_num_threads(options.threads)
    asserting, twin, example = models()
    runs = {
        "fx (twin, no example)": lambda: bnlint.check(twin),
        "fx (assert, no example)": lambda: bnlint.check(asserting),
        "fx + shapes (twin, example)": lambda: bnlint.check(twin, example=example),
        "dynamic (assert, example)": lambda: bnlint.check(asserting, example=example),
    }
    report = bnlint.check(asserting, example=example)
    assert report.models[0].trace == "dynamic", report.models[0]
    assert bnlint.check(twin).models[0].trace == "full"
    times: dict[str, list[float]] = {name: [] for name in runs}
    for run in runs.values():
        run()  # warm-up
    for _ in range(options.repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) for name, values in times.items()}
    nodes = sum(len(u.gm.graph.nodes) for u in trace_model(asserting, example).units)
    print(f"StackedHourglass (fixtures/see_through_assert.py), {nodes} recorded nodes, "
          f"torch {torch.__version__}, {options.threads} thread(s), "
          f"medians of {options.repeats} alternating runs:")
    for name, value in medians.items():
        print(f"  {name:28s} {value * 1000:8.1f} ms")
    fx, dynamic = medians["fx (twin, no example)"], medians["dynamic (assert, example)"]
    print(f"  ratio dynamic / fx: {dynamic / fx:.2f}")
    print(f"  first dynamic check in a fresh process: {first_run_seconds():.2f} s")


if __name__ == "__main__":
    main()
