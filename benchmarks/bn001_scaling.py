"""Does BN001 cost grow with the model, not with the model times its findings?

Builds one ``nn.Sequential`` of N conv -> BatchNorm -> ReLU blocks twice, once with the convs'
biases (N BN001 findings) and once without (none), and prints the median time of
``bnlint.check`` on each and their ratio, for N = 100, 200, 400 and 800. A rule whose cost is
linear in the graph and the findings keeps the ratio near 1 as N grows (the aim is at most 1.3
at 800 blocks); one that searches the whole graph per finding sees it grow with N::

    python benchmarks/bn001_scaling.py [--blocks 100 200 400 800] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

from torch import nn

import bnlint
from bnlint import source


def build(blocks: int, bias: bool) -> nn.Module:
    """Built while construction sites are recorded, as the command line builds models."""
    layers = []
    with source.recording():
        for _ in range(blocks):
            layers += [nn.Conv2d(8, 8, 3, padding=1, bias=bias), nn.BatchNorm2d(8), nn.ReLU()]
        return nn.Sequential(*layers)


def median_check_time(model: nn.Module, repeats: int, with_findings: bool) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        report = bnlint.check(model, select=["BN001"])
        times.append(time.perf_counter() - start)
    if bool(report.findings) != with_findings:
        raise SystemExit(f"expected {'some' if with_findings else 'no'} BN001 findings, got "
                         f"{len(report.findings)}")
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, nargs="+", default=[100, 200, 400, 800])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"{'blocks':>6}  {'with bias':>10}  {'without':>10}  {'ratio':>6}")
    for blocks in args.blocks:
        with_bias = median_check_time(build(blocks, True), args.repeats, True)
        without = median_check_time(build(blocks, False), args.repeats, False)
        print(f"{blocks:>6}  {with_bias:>9.2f}s  {without:>9.2f}s  {with_bias / without:>6.2f}")


if __name__ == "__main__":
    main()
