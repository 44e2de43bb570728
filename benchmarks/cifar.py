"""`bnlint --bench` with its defaults on two CIFAR-size models (32x32 inputs, 10 classes), and
how long each takes against a goal of 3 minutes on two cores.

  bnlint 'fixtures/vgg.py:vgg11()' --bench
      a 9.2-million-parameter VGG11 whose convolutions keep bias=True before BatchNorm: the
      safe BN001 fix alone, so the outputs are compared and nothing is trained
  bnlint 'fixtures/resnet18_act_first.py:ResNet18()' --bench
      an 11-million-parameter ResNet-18 with ReLU before every BatchNorm: the unsafe BN002
      reorder, so both are trained (range test, 3 seeds, held-out, time to target)

Both print the mode check (what a missing .eval() costs). The data is the benchmark's own
synthetic task: nothing is downloaded. Per model it prints the verdict and every measurement,
the wall and CPU time of the whole command, and the load average before and after (on a
shared machine the CPU time is the better guide to what a quiet one takes)::

    python benchmarks/cifar.py [extra bnlint options, e.g. --device cuda]
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOAL_SECONDS = 180
MODELS = ("fixtures/vgg.py:vgg11()", "fixtures/resnet18_act_first.py:ResNet18()")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _number(value, spec: str = ".3g") -> str:
    return "-" if value is None else format(value, spec)


def describe(entry: dict) -> list[str]:
    lines = [f"fixes: {', '.join(sorted({f['code'] for f in entry['fixes']}))} "
             f"({len(entry['fixes'])})"]
    report = entry["benchmark"]
    if entry["error"]:
        return [*lines, f"not run: {entry['error']}"]
    eq = report["equivalence"]
    if eq is not None:
        lines.append(f"outputs compared on {eq['inputs']} inputs: largest difference "
                     f"{_number(eq['max_error'], '.2g')}, identical: {eq['identical']}")
    settings = report["settings"]
    lines.append(f"verdict: {report['verdict']}")
    if report["variants"]["original"]["runs"]:
        lines.append(f"lr {settings['lr']:g} ({settings['lr_from']}), {settings['steps']} steps "
                     f"({settings['steps_from']}) x {settings['seeds']} seeds, "
                     f"final-loss ratio {_number(report['final_loss_ratio'])}")
        for name, variant in report["variants"].items():
            heldout = variant["heldout"] or {}
            statuses = ",".join(sorted({r["status"] for r in variant["runs"]}))
            lines.append(
                f"  {name:<8} {statuses}; final {_number(variant['final_loss']['mean'])}, "
                f"held-out loss {_number(heldout.get('loss'))} accuracy "
                f"{_number(heldout.get('accuracy'), '.0%')}, gap "
                f"{_number(variant['train_eval_gap'])}, to target "
                f"{_number(variant['steps_to_target'], '.0f')} steps / "
                f"{_number(variant['seconds_to_target'], '.1f')} s, "
                f"{variant['step_ms']:.0f} ms/step")
    mode = entry["mode_check"]
    if mode is not None:
        lines.append(f"mode check: {mode['train_mode_changed']:.0%} of {mode['samples']} "
                     f"predictions change with the batch in training mode, "
                     f"{mode['eval_mode_changed']:.0%} in eval mode")
    return lines


def run(spec: str, extra: list[str]) -> None:
    command = [sys.executable, "-m", "bnlint", spec, "--bench", "--format", "json", *extra]
    load = os.getloadavg()[0]
    start, cpu = time.perf_counter(), _children_cpu()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - start, _children_cpu() - cpu
    if done.returncode == 2:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
    [entry] = json.loads(done.stdout)["benchmarks"]
    print(spec)
    for line in describe(entry):
        print(f"  {line}")
    print(f"  wall time {wall:.0f} s ({wall / GOAL_SECONDS:.2f} of the {GOAL_SECONDS} s goal), "
          f"CPU time {cpu:.0f} s; load average {load:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after, on {os.cpu_count()} cores")


def main() -> None:
    extra = sys.argv[1:]
    for spec in MODELS:
        run(spec, extra)


if __name__ == "__main__":
    main()
