"""What ``bnlint.fix`` costs and what it gives back, on models shaped like real ones.

For each model: the median time of ``bnlint.fix`` against ``bnlint.check`` (the fixer traces a
copy and re-checks after each round), the median time of one training step (forward,
backward, SGD) of the fixed model against the original, and the largest difference between
their float32 outputs in training and in eval mode after a few training steps, next to the
largest output::

    python benchmarks/fix_cost.py [--repeats 5] [--threads 1]

Models: the bundled VGG11 (8 biased convs, at width 1 and 1/8) and the bundled ResNet-50 with a
bias put back on each of its 53 convolutions, which is how many ResNet ports look.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

import bnlint

ROOT = Path(__file__).resolve().parent.parent


def fixture(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "fixtures" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def with_biases(model: nn.Module) -> nn.Module:
    """Every Conv2d of ``model`` rebuilt with a (random) bias, weights kept."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Conv2d) and child.bias is None:
                biased = nn.Conv2d(child.in_channels, child.out_channels, child.kernel_size,
                                   child.stride, child.padding, child.dilation, child.groups)
                biased.weight.data.copy_(child.weight.data)
                setattr(parent, name, biased)
    return model


def median_time(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def step(model: nn.Module, x: torch.Tensor, optimizer) -> None:
    optimizer.zero_grad()
    model(x).square().mean().backward()
    optimizer.step()


def measure(name: str, model: nn.Module, shape: tuple, repeats: int) -> None:
    model.train()
    warmup = torch.optim.SGD(model.parameters(), lr=0.01)
    for seed in range(3):  # move weights and running statistics away from their init
        torch.manual_seed(seed)
        step(model, torch.randn(shape) + 1, warmup)
    check_s = median_time(lambda: bnlint.check(model), repeats)
    fix_s = median_time(lambda: bnlint.fix(model), repeats)
    result = bnlint.fix(model)
    fixed = result.model
    x = torch.randn(shape) + 1
    worst, scale = {}, 0.0
    for training in (True, False):
        model.train(training)
        fixed.train(training)
        with torch.no_grad():
            expected = model(x)
            worst["train" if training else "eval"] = (fixed(x) - expected).abs().max().item()
        scale = max(scale, expected.abs().max().item())
    model.train()
    fixed.train()
    nets = {"original": model, "fixed": fixed}
    optimizers = {k: torch.optim.SGD(n.parameters(), lr=0.0) for k, n in nets.items()}
    times: dict[str, list[float]] = {k: [] for k in nets}
    for _ in range(repeats + 1):  # alternate, so load on the machine hits both alike
        for key, net in nets.items():
            start = time.perf_counter()
            step(net, x, optimizers[key])  # lr=0: time the step, keep the weights
            times[key].append(time.perf_counter() - start)
    steps = {k: statistics.median(t[1:]) for k, t in times.items()}
    print(f"{name:<22} fixes {len(result.applied):>3}  "
          f"check {check_s * 1e3:7.1f} ms  fix {fix_s * 1e3:7.1f} ms  "
          f"fix/check {fix_s / check_s:5.2f}  "
          f"step fixed/original {steps['fixed'] / steps['original']:5.3f}  "
          f"max |diff| train {worst['train']:.1e} eval {worst['eval']:.1e} "
          f"(max |output| {scale:.1e})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    vgg, resnet = fixture("vgg"), fixture("resnet50")
    measure("vgg11 (width 1/8)", vgg.vgg11_small(), (16, 3, 32, 32), args.repeats)
    measure("vgg11", vgg.vgg11(), (8, 3, 32, 32), args.repeats)
    measure("resnet50 with biases", with_biases(resnet.ResNet50()), (4, 3, 64, 64), args.repeats)


if __name__ == "__main__":
    main()
