"""What following a project's imports costs the script rules (BN003, BN004), and what the
per-file summary cache saves.

A synthetic project is written to a temporary folder: 200 files (model classes built from
shared layers, training and evaluation helpers, packages re-exporting them) and 50 scripts,
each importing a few of them, one in five with a mistake for the rules to find. Timed, as the
user runs it (``bnlint --static`` in a fresh process, medians of alternating runs):

  one run:     one command over the 50 scripts, which reads each project file once;
  single runs: one command per script, 50 processes, each reading what its script imports.

The goal is one run costing at most 1.5x a single script's run, not 50x. Wall and CPU time are
both printed (CPU time is steadier on a machine shared with other work). The same two are also
timed inside one process (the analysis alone, without starting Python and bnlint), with how
many files were parsed::

    python benchmarks/script_cache.py [--repeats 3] [--files 200] [--scripts 50]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = '''"""Building blocks shared by the models."""
from torch import nn


def conv_bn(cin, cout, stride=1):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


def mlp(features, hidden, classes):
    return nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, classes))
'''
MODEL = '''"""Model family {n}."""
from torch import nn

from ..layers import conv_bn, mlp


class Block{n}(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.body = nn.Sequential(conv_bn(channels, channels), conv_bn(channels, channels))

    def forward(self, x):
        return x + self.body(x)


class Net{n}(nn.Module):
    def __init__(self, classes=10, width={width}):
        super().__init__()
        self.stem = conv_bn(3, width, stride=2)
        self.blocks = nn.Sequential(*[Block{n}(width) for _ in range({depth})])
        self.head = nn.Linear(width, classes)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))

    def calc_loss(self, batch):
        images, labels = batch
        return nn.functional.cross_entropy(self(images), labels)


class Head{n}(nn.Module):
    def __init__(self, features=64, classes=10):
        super().__init__()
        self.layers = mlp(features, 128, classes)

    def forward(self, x):
        return self.layers(x)
'''
ENGINE = '''"""Training and evaluation helpers, set {n}."""
import torch
import torch.nn.functional as F


def train_one_epoch(model, loader, optimizer, scheduler=None):
    for step, (images, labels) in enumerate(loader):
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()


def fit_epoch(model, loader, optimizer):
    model.train()
    train_one_epoch(model, loader, optimizer)


def evaluate(model, loader):
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for images, labels in loader:
            correct += (model(images).argmax(1) == labels).sum().item()
            total += labels.numel()
    return correct / max(total, 1)


@torch.no_grad()
def predict(model, images):
    return model(images).argmax(1)


def summarize(history):
    return {{key: sum(values) / len(values) for key, values in history.items()}}
'''
UTIL = '''"""Plain helpers, number {n}: no model here."""
import json
from pathlib import Path


def read_split(root, name="train"):
    return json.loads((Path(root) / f"{{name}}_{n}.json").read_text())


def batches(items, size=64):
    return [items[i:i + size] for i in range(0, len(items), size)]
'''
SCRIPTS = [
    # a training run with a validation pass per epoch, back in training mode each time
    '''import torch
from proj.data import loaders
from proj.engine.e{e} import evaluate, fit_epoch
from proj.models import Net{m}
from proj.utils.u{u} import read_split

model = Net{m}()
train_loader, val_loader = loaders(read_split("data"))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
for epoch in range(30):
    fit_epoch(model, train_loader, optimizer)
    print(epoch, evaluate(model, val_loader))
''',
    # training through the model's own loss method, then a test pass in eval mode
    '''import torch
from proj.data import loaders
import proj.models.m{m} as arch

model = arch.Net{m}(classes=100)
head = arch.Head{m}()
train_loader, test_loader = loaders(None)
optimizer = torch.optim.AdamW(model.parameters())
for epoch in range(10):
    for batch in train_loader:
        loss = model.calc_loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
model.eval()
with torch.no_grad():
    scores = [model(x).softmax(1) for x, _ in test_loader]
''',
    # prediction with a helper, after loading weights and switching to eval mode
    '''import sys

import torch
from proj.engine import e{e} as engine
from proj.models import Net{m}

model = Net{m}()
model.load_state_dict(torch.load(sys.argv[1]))
model.eval()
print(engine.predict(model, torch.load(sys.argv[2])))
''',
    # an export, in eval mode
    '''import torch
from proj.models import Net{m}

net = Net{m}().eval()
torch.onnx.export(net, (torch.randn(1, 3, 32, 32),), "net{m}.onnx", dynamo=True)
''',
    # a mistake: train() once before the loop, and the evaluation leaks into the next epoch
    '''import torch
from proj.data import loaders
from proj.engine.e{e} import evaluate, train_one_epoch
from proj.models import Net{m}

model = Net{m}()
train_loader, val_loader = loaders(None)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
model.train()
for epoch in range(5):
    train_one_epoch(model, train_loader, optimizer)
    print(evaluate(model, val_loader))
''',
]
DATA = '''"""Loaders."""


def loaders(split):
    return split, split
'''


def write_project(folder: Path, files: int, scripts: int) -> list[Path]:
    """The project's files (``files`` of them, packages included) and its scripts."""
    models = engines = max(1, (files - 6) * 2 // 5)  # besides six package and shared files
    utils = files - 6 - models - engines
    written = {
        "pyproject.toml": '[project]\nname = "proj"\nversion = "0"\n',
        "proj/__init__.py": "", "proj/data.py": DATA, "proj/layers.py": LAYERS,
        "proj/engine/__init__.py": "", "proj/utils/__init__.py": "",
        "proj/models/__init__.py": "".join(
            f"from .m{n} import Head{n}, Net{n}\n" for n in range(models)),
    }
    for n in range(models):
        written[f"proj/models/m{n}.py"] = MODEL.format(n=n, width=8 + n % 8, depth=1 + n % 3)
    for n in range(engines):
        written[f"proj/engine/e{n}.py"] = ENGINE.format(n=n)
    for n in range(utils):
        written[f"proj/utils/u{n}.py"] = UTIL.format(n=n)
    paths = []
    for k in range(scripts):
        name = f"scripts/s{k:02d}.py"
        written[name] = SCRIPTS[k % len(SCRIPTS)].format(
            m=(k * 7) % models, e=(k * 11) % engines, u=(k * 3) % max(utils, 1))
        paths.append(folder / name)
    for name, text in written.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert sum(n.endswith(".py") and not n.startswith("scripts/") for n in written) == files
    return paths


def command(folder: Path, *paths: str) -> tuple[float, float]:
    """Wall and CPU seconds of one ``bnlint --static`` process (CPU time is the fairer figure
    on a machine shared with other work)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "bnlint", "--static", *paths], cwd=folder,
                            env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert result.returncode in (0, 1), result.stderr
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return elapsed, cpu


IN_PROCESS = '''
import json, sys, time
start = time.process_time()
from bnlint.lint import lint_specs
from bnlint.rules.modes import summaries
imported = time.process_time()
report = lint_specs(sys.argv[1:], static=True)
done = time.process_time()
parsed = sum(s.project.parses for s in summaries._projects.values())
print(json.dumps({"import": imported - start, "lint": done - imported,
                  "findings": len(report.findings), "parsed": parsed}))
'''


def in_process(folder: Path, *paths: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", IN_PROCESS, *paths], cwd=folder, env=env,
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--scripts", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        scripts = [str(p.relative_to(folder)) for p in write_project(folder, args.files,
                                                                      args.scripts)]
        whole, singles = [], []
        for _ in range(args.repeats):
            whole.append(command(folder, "scripts"))
            singles.append([command(folder, s) for s in scripts])
        print(f"Synthetic project: {args.files} files, {args.scripts} scripts "
              f"(bnlint --static, fresh process, median of {args.repeats})")
        def figures(index: int) -> tuple[float, float, float]:
            return (statistics.median(t[index] for t in whole),
                    statistics.median(t[index] for run in singles for t in run),
                    statistics.median(sum(t[index] for t in run) for run in singles))

        wall, cpu = figures(0), figures(1)
        print("                                    wall      CPU")
        print(f"  one run over all scripts:     {wall[0]:6.2f} s  {cpu[0]:6.2f} s")
        print(f"  one script alone (median):    {wall[1]:6.2f} s  {cpu[1]:6.2f} s")
        print(f"  sum of {args.scripts} single-script runs: {wall[2]:6.2f} s  {cpu[2]:6.2f} s")
        print(f"  one run / one script:         {wall[0] / wall[1]:6.2f}x  "
              f"{cpu[0] / cpu[1]:6.2f}x  (goal: at most 1.5x)")

        whole_in = in_process(folder, "scripts")
        single_in = [in_process(folder, s) for s in scripts]
        lint_single = statistics.median(r["lint"] for r in single_in)
        print("Analysis alone (CPU inside one process, bnlint already imported):")
        print(f"  one run over all scripts:     {whole_in['lint']:6.2f} s, "
              f"{whole_in['parsed']} files parsed, {whole_in['findings']} findings")
        print(f"  one script alone (median):    {lint_single:6.3f} s, "
              f"{statistics.median(r['parsed'] for r in single_in):.0f} files parsed")
        print(f"  sum of {args.scripts} single-script runs: "
              f"{sum(r['lint'] for r in single_in):6.2f} s, "
              f"{sum(r['parsed'] for r in single_in)} files parsed")
        print(f"  import of bnlint:             {whole_in['import']:6.2f} s")


if __name__ == "__main__":
    main()
