"""How long bnlint takes, next to what the user pays anyway: importing torch and building the model.

Runs, alternating so that disk caches and CPU load affect both alike,
  bnlint fixtures/resnet50.py
  python -c "import torch; <import fixtures/resnet50.py and build ResNet50()>"
and prints the median of each and their ratio (the aim is at most 1.2); then the same for a copy
of the ResNet-50 whose 53 convolutions keep their bias (53 BN001 findings), so that the cost of
findings shows. Then times
``bnlint --version`` and bnlint over a folder of Python files that define no model, and checks
that neither imports torch::

    python benchmarks/startup.py [--repeats 9]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "fixtures" / "resnet50.py"


def build_command(path: Path) -> list[str]:
    """``python -c``: import torch, import the file and build its ResNet50."""
    return [sys.executable, "-c", (
        "import torch, importlib.util; "
        f"spec = importlib.util.spec_from_file_location('resnet50', {str(path)!r}); "
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module); "
        "module.ResNet50()")]
NO_MODEL_FILE = '''"""Plain code, no model: bnlint reads it and moves on."""
import json


def load(path):
    with open(path) as handle:
        return json.load(handle)


class Settings:
    def __init__(self, **values):
        self.values = values
'''


def bnlint_command() -> list[str]:
    """The installed console script beside this interpreter, else ``python -m bnlint``."""
    script = Path(sys.executable).with_name("bnlint")
    return [str(script)] if script.exists() else [sys.executable, "-m", "bnlint"]


def timed(command: list[str], expect: set[int] = frozenset({0})) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode not in expect:
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return elapsed


def imports_torch(command: list[str]) -> bool:
    """Whether the command imports torch (run under ``python -X importtime``)."""
    python = [sys.executable, "-X", "importtime"]
    args = command[1:] if command[0] == sys.executable else ["-m", "bnlint", *command[1:]]
    done = subprocess.run(python + args, cwd=ROOT, capture_output=True, text=True)
    return any(line.split("|")[-1].strip() == "torch" for line in done.stderr.splitlines())


def median_of(repeats: int, command: list[str], expect=frozenset({0})) -> float:
    return statistics.median(timed(command, expect) for _ in range(repeats))


def against_building(path: Path, repeats: int, expect: set[int]) -> None:
    """bnlint on ``path`` and importing torch plus building its model, alternately."""
    lint = [*bnlint_command(), str(path)]
    baseline = build_command(path)
    timed(lint, expect)  # warm the disk cache for both
    timed(baseline)
    lint_times, baseline_times = [], []
    for _ in range(repeats):
        lint_times.append(timed(lint, expect))
        baseline_times.append(timed(baseline))
    lint_median = statistics.median(lint_times)
    baseline_median = statistics.median(baseline_times)
    print(f"bnlint {path.name}: median {lint_median:.2f} s over {repeats} runs")
    print(f"python -c 'import torch; build ResNet50()': median {baseline_median:.2f} s")
    print(f"ratio: {lint_median / baseline_median:.2f} (aim: <= 1.2)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    bnlint = bnlint_command()
    against_building(FIXTURE, args.repeats, {0})
    with tempfile.TemporaryDirectory() as folder:
        biased = Path(folder, "resnet50_biased.py")
        biased.write_text(FIXTURE.read_text(encoding="utf-8").replace("bias=False", "bias=True"),
                          encoding="utf-8")
        print("\nThe same with every convolution biased (53 BN001 findings):")
        against_building(biased, args.repeats, {1})

    bare = [sys.executable, "-c", "pass"]
    print(f"\npython -c pass (the interpreter alone): median {median_of(args.repeats, bare):.3f} s")
    version = [*bnlint, "--version"]
    print(f"bnlint --version: median {median_of(args.repeats, version):.3f} s, "
          f"imports torch: {imports_torch(version)}")
    with tempfile.TemporaryDirectory() as folder:
        for index in range(50):
            Path(folder, f"module_{index}.py").write_text(NO_MODEL_FILE, encoding="utf-8")
        no_models = [*bnlint, folder]
        print(f"bnlint on 50 files without models: median "
              f"{median_of(args.repeats, no_models):.3f} s, imports torch: {imports_torch(no_models)}")


if __name__ == "__main__":
    main()
