"""Does BN001 cost grow with the model, not with the model times its findings?

Builds one ``nn.Sequential`` of N conv -> BatchNorm -> ReLU blocks twice, once with the convs'
biases (N BN001 hits, each planned and placed, merged into one finding since one line builds
every conv) and once without, and prints the median time of ``bnlint.check`` on each and
their ratio, for N = 100, 200, 400 and 800. A rule whose cost is linear in the graph and the
findings keeps the ratio near 1 as N grows (the aim is at most 1.3 at 800 blocks); one that
searches the whole graph per finding sees it grow with N::

    python benchmarks/bn001_scaling.py [--blocks 100 200 400 800] [--repeats 5]
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


def check_times(blocks: int, repeats: int) -> tuple[float, float]:
    """Median seconds of ``bnlint.check`` with the biases and without, the two alternating so
    that the machine's load weighs on both alike."""
    models = {True: build(blocks, True), False: build(blocks, False)}
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(repeats):
        for bias, model in models.items():
            start = time.perf_counter()
            report = bnlint.check(model, select=["BN001"])
            times[bias].append(time.perf_counter() - start)
            if bool(report.findings) != bias:
                raise SystemExit(f"{blocks} blocks, bias={bias}: {len(report.findings)} findings")
    return statistics.median(times[True]), statistics.median(times[False])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, nargs="+", default=[100, 200, 400, 800])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"{'blocks':>6}  {'with bias':>10}  {'without':>10}  {'ratio':>6}")
    for blocks in args.blocks:
        with_bias, without = check_times(blocks, args.repeats)
        print(f"{blocks:>6}  {with_bias:>9.2f}s  {without:>9.2f}s  {with_bias / without:>6.2f}")


if __name__ == "__main__":
    main()
