"""What ``bnlint.guard`` costs per forward pass.

Two models, each in two cases (inference: eval mode under no_grad; training forward: training
mode with autograd on):

* ResNet-50 (``fixtures/resnet50.py``, 53 BatchNorm layers) on a batch of images: the figure a
  user sees;
* 53 BatchNorm layers and nothing else, on a tiny input: the guard's own cost per layer, with
  almost no computation around it.

Every pair times one forward pass without the guard and one with it, back to back; the guard
is attached and removed between the two, outside the timing. Times are the CPU time of this
process with torch on one thread (``--threads`` to change it), so that other processes on the
machine slow neither side. It prints the median time per pass of each, the median of the
per-pair ratios (guarded / unguarded) and that ratio as microseconds per pass and per layer::

    python benchmarks/guard_overhead.py [--pairs 40] [--batch 8] [--size 64] [--threads 1]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from pathlib import Path

import torch
from torch import nn

import bnlint

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "resnet50.py"


def resnet50() -> nn.Module:
    spec = importlib.util.spec_from_file_location("resnet50", FIXTURE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ResNet50(num_classes=10)


def one_pass(model: nn.Module, x: torch.Tensor) -> float:
    start = time.process_time()
    model(x)
    return time.process_time() - start


def pairs(model: nn.Module, x: torch.Tensor, count: int, training: bool):
    """(unguarded, guarded) seconds of ``count`` back-to-back pairs of forward passes."""
    model.train(training)
    plain, guarded = [], []
    with torch.set_grad_enabled(training):
        one_pass(model, x)  # warm up
        for _ in range(count):
            plain.append(one_pass(model, x))
            handle = bnlint.guard(model, action="raise")
            guarded.append(one_pass(model, x))
            handle.remove()
    return plain, guarded


def report(name: str, model: nn.Module, x: torch.Tensor, count: int) -> None:
    layers = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    print(f"\n{name}: {layers} BatchNorm layers, input {list(x.shape)}")
    for case, training in (("inference (eval, no_grad)", False),
                           ("training forward (train, grad)", True)):
        plain, guarded = pairs(model, x, count, training)
        ratio = statistics.median(g / p for g, p in zip(guarded, plain))
        base = statistics.median(plain)
        extra = (ratio - 1) * base * 1e6
        print(f"  {case:<32}{base * 1e3:>9.2f} ms{statistics.median(guarded) * 1e3:>9.2f} ms"
              f"   ratio {ratio:.3f}   {extra:+.0f} us/pass ({extra / layers:+.1f} us/layer)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=40)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=64, help="image height and width")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"{torch.get_num_threads()} threads, {args.pairs} pairs of passes per case;"
          " columns: unguarded, guarded (median per pass)")
    report("ResNet-50", resnet50(), torch.randn(args.batch, 3, args.size, args.size),
           args.pairs)
    layers = nn.Sequential(*(nn.BatchNorm1d(8) for _ in range(53)))
    report("BatchNorm only", layers, torch.randn(4, 8), args.pairs * 25)


if __name__ == "__main__":
    main()
