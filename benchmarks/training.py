"""What `bnlint --bench` says about the bundled fixtures, and how long it takes with its defaults.

Runs, one after another, with the defaults (plus any extra options given)
  bnlint 'fixtures/vgg.py:vgg11_small()'      --select BN001 --bench   (the safe bias fix)
  bnlint 'fixtures/act_before_bn.py:SmallNet()' --select BN002 --bench (BatchNorm moved first)
  bnlint 'fixtures/deep_plain.py:DeepMLP()'   --select BN005 --bench   (BatchNorm added)
  bnlint 'fixtures/deep_plain.py:PlainCNN()'  --select BN005 --bench
and prints per fixture the verdict, the final losses, the steps to the common target, the time
per step and the wall time of the whole command next to the 30 s the defaults aim at::

    python benchmarks/training.py [--lr-sweep] [--steps N] ...
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AIM_SECONDS = 30
FIXTURES = (
    ("fixtures/vgg.py:vgg11_small()", "BN001"),
    ("fixtures/act_before_bn.py:SmallNet()", "BN002"),
    ("fixtures/deep_plain.py:DeepMLP()", "BN005"),
    ("fixtures/deep_plain.py:PlainCNN()", "BN005"),
)


def describe(variant: dict) -> str:
    final = variant["final_loss"]
    mean = "diverged" if final["mean"] is None else f"{final['mean']:.3f} ± {final['std']:.3f}"
    steps = variant["steps_to_target"]
    swept = variant["max_stable_lr"]
    return (f"final {mean}, to target {'-' if steps is None else f'{steps:.0f}'}, "
            f"{variant['step_ms']:.1f} ms/step, {variant['params']:,} params"
            + ("" if not variant["lr_sweep"] else f", max lr {swept}"))


def main() -> None:
    extra = sys.argv[1:]
    for spec, code in FIXTURES:
        command = [sys.executable, "-m", "bnlint", spec, "--select", code, "--bench",
                   "--format", "json", *extra]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode == 2:
            raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
        [entry] = json.loads(done.stdout)["benchmarks"]
        report = entry["benchmark"]
        ratio = report["final_loss_ratio"]
        print(f"{spec} ({code}, {len(entry['fixes'])} fixes): {report['verdict']}, final loss "
              f"ratio {'-' if ratio is None else f'{ratio:.3f}'}, "
              f"{report['settings']['steps']} steps x {report['settings']['seeds']} seeds")
        for name, variant in report["variants"].items():
            print(f"  {name:<8} {describe(variant)}")
        for note in report["notes"]:
            print(f"  note: {note}")
        print(f"  wall time {wall:.1f} s ({wall / AIM_SECONDS:.2f} of the {AIM_SECONDS} s aim)")


if __name__ == "__main__":
    main()
