"""What `bnlint --bench` says about the bundled fixtures, and how long it takes with its defaults.

Runs, one after another, with the defaults (plus any extra options given)
  bnlint 'fixtures/vgg.py:vgg11_small()'      --select BN001 --bench   (the safe bias fix)
  bnlint 'fixtures/act_before_bn.py:SmallNet()' --select BN002 --bench (BatchNorm moved first)
  bnlint 'fixtures/deep_plain.py:DeepMLP()'   --select BN005 --bench   (BatchNorm added)
  bnlint 'fixtures/deep_plain.py:PlainCNN()'  --select BN005 --bench
and prints per fixture the verdict, the steps and where they came from, the final losses, the
steps to the common target, the time per step, and the wall and CPU time of the whole command
against the 60 s the defaults must stay well under (on a busy machine the CPU time is the
better guide to what a quiet one takes)::

    python benchmarks/training.py [--load N] [--lr-sweep] [--steps N] ...

``--load N`` keeps N busy-looping processes running meanwhile, as on a shared machine: the
steps and losses printed stay the same, only the times grow.
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
LIMIT_SECONDS = 60
FIXTURES = (
    ("fixtures/vgg.py:vgg11_small()", "BN001"),
    ("fixtures/act_before_bn.py:SmallNet()", "BN002"),
    ("fixtures/deep_plain.py:DeepMLP()", "BN005"),
    ("fixtures/deep_plain.py:PlainCNN()", "BN005"),
)


def describe(variant: dict) -> str:
    final = variant["final_loss"]
    failed = sorted({r["status"] for r in variant["runs"]} - {"trains"})
    mean = (", ".join(failed) if final["mean"] is None
            else f"{final['mean']:.3f} ± {final['std']:.3f}")
    steps = variant["steps_to_target"]
    swept = variant["max_stable_lr"]
    return (f"final {mean}, to target {'-' if steps is None else f'{steps:.0f}'}, "
            f"{variant['step_ms']:.1f} ms/step, {variant['params']:,} params"
            + ("" if not variant["lr_sweep"] else f", max lr {swept}"))


def run(spec: str, code: str, extra: list[str]) -> None:
    command = [sys.executable, "-m", "bnlint", spec, "--select", code, "--bench",
               "--format", "json", *extra]
    start, cpu = time.perf_counter(), _children_cpu()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - start, _children_cpu() - cpu
    if done.returncode == 2:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
    [entry] = json.loads(done.stdout)["benchmarks"]
    report = entry["benchmark"]
    settings = report["settings"]
    if not report["variants"]["original"]["runs"]:  # a safe fix, verified, not trained
        eq = report["equivalence"]
        print(f"{spec} ({code}, {len(entry['fixes'])} fixes): {report['verdict']}, verified on "
              f"{eq['inputs']} inputs, largest difference {eq['max_error']:.2g}")
        print(f"  wall time {wall:.1f} s, CPU time {cpu:.1f} s")
        return
    ratio = report["final_loss_ratio"]
    cut = " (cut by --time-budget)" if report["cut_by_time"] else ""
    print(f"{spec} ({code}, {len(entry['fixes'])} fixes): {report['verdict']}, final loss "
          f"ratio {'-' if ratio is None else f'{ratio:.3f}'}, {settings['steps']} steps "
          f"({settings['steps_from']}){cut} x {settings['seeds']} seeds, lr {settings['lr']:g} "
          f"({settings['lr_from']})")
    for name, variant in report["variants"].items():
        print(f"  {name:<8} {describe(variant)}")
    for note in report["notes"]:
        print(f"  note: {note}")
    print(f"  wall time {wall:.1f} s ({wall / LIMIT_SECONDS:.2f} of the {LIMIT_SECONDS} s limit), "
          f"CPU time {cpu:.1f} s")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    extra = sys.argv[1:]
    load = 0
    if extra[:1] == ["--load"]:
        load, extra = int(extra[1]), extra[2:]
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores, "
          f"{os.environ.get('OMP_NUM_THREADS', 'default')} threads, {load} busy loops added")
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(load)]
    try:
        for spec, code in FIXTURES:
            run(spec, code, extra)
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()


if __name__ == "__main__":
    main()
