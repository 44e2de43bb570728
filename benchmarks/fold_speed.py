"""Eval-mode inference time of a model as written, folded by ``bnlint.fold``, and fused by
torch's ``torch.fx.experimental.optimization.fuse``, side by side in one process.

Two models from ``fixtures/``: MobileNetV2 on one 224x224 image (52 BatchNorms, most after
depthwise or 1x1 convolutions, where BatchNorm is a large share of the work) and ResNet-18 on
a batch of eight 128x128 images (20 BatchNorms after 3x3 convolutions). Their running
statistics are moved by a few training-mode passes first, so the folds are not trivial.

Every round times one forward pass of each of the three, in an order that rotates from round
to round, under ``torch.no_grad()``; times are the CPU time of this process with torch on one
thread (``--threads`` to change it), so other processes on the machine weigh on none of them.
It prints the median time per pass of each, the median per-round ratio of each to the
original, and the largest relative difference of each output from the original's::

    python benchmarks/fold_speed.py [--rounds 30] [--threads 1]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from pathlib import Path

import torch
from torch import nn
from torch.fx.experimental.optimization import fuse

import bnlint

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CASES = (  # fixture, model class, batch
    ("mobilenetv2", "MobileNetV2", 1),
    ("resnet18", "ResNet18", 8),
)


def fixture(name: str):
    spec = importlib.util.spec_from_file_location(name, FIXTURES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def prepared(name: str, cls: str) -> tuple[nn.Module, tuple[int, ...]]:
    """The model in eval mode, its running statistics moved by a few training passes."""
    module = fixture(name)
    torch.manual_seed(0)
    model = getattr(module, cls)()
    with torch.no_grad():
        for step in range(3):
            model(torch.randn(4, *module.INPUT_SHAPE) * (1 + step))
    return model.eval(), module.INPUT_SHAPE


def seconds(model: nn.Module, x: torch.Tensor) -> float:
    start = time.process_time()
    model(x)
    return time.process_time() - start


def compare(models: dict[str, nn.Module], x: torch.Tensor, rounds: int) -> dict[str, list[float]]:
    """Seconds per pass of each model, ``rounds`` times, the order rotating every round."""
    names = list(models)
    times: dict[str, list[float]] = {name: [] for name in names}
    with torch.no_grad():
        for name in names:  # warm up
            seconds(models[name], x)
        for index in range(rounds):
            shift = index % len(names)
            for name in names[shift:] + names[:shift]:
                times[name].append(seconds(models[name], x))
    return times


def error(out: torch.Tensor, reference: torch.Tensor) -> float:
    return ((out - reference).abs().max() / reference.abs().max()).item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    options = parser.parse_args()
    torch.set_num_threads(options.threads)
    print(f"torch {torch.__version__}, {options.threads} thread(s), {options.rounds} rounds, "
          "CPU time per forward pass (median)")
    print(f"{'model':<12} {'batch':>5} {'original':>9} {'fold':>15} {'fuse':>15} "
          f"{'fold error':>10} {'fuse error':>10}")
    for name, cls, batch in CASES:
        model, shape = prepared(name, cls)
        x = torch.randn(batch, *shape)
        start = time.perf_counter()
        folded = bnlint.fold(model, example=x)
        took = time.perf_counter() - start
        models = {"original": model, "fold": folded.model, "fuse": fuse(model)}
        times = compare(models, x, options.rounds)
        with torch.no_grad():
            reference = model(x)
            errors = {n: error(models[n](x), reference) for n in ("fold", "fuse")}
        cells = []
        for n in ("fold", "fuse"):
            ratio = statistics.median(o / t for o, t in zip(times["original"], times[n]))
            cells.append(f"{statistics.median(times[n]) * 1e3:6.1f} ms {ratio:4.2f}x")
        print(f"{cls:<12} {batch:>5} {statistics.median(times['original']) * 1e3:6.1f} ms "
              f"{cells[0]:>15} {cells[1]:>15} {errors['fold']:>10.1e} {errors['fuse']:>10.1e}"
              f"   ({len(folded.folded)} pairs folded in {took:.1f} s)")


if __name__ == "__main__":
    main()
