"""Wall time of the bnlint pre-commit hook on two commits, as a user meets it.

A temporary git repository uses the `bnlint` hook of .pre-commit-hooks.yaml as a `repo: local`
hook (the README's form, which runs in this environment). Two commits are timed with
``pre-commit run`` on the staged files:

  no model:  plain modules and a training script (a script is never imported);
  model:     the same files plus fixtures/vgg.py, which bnlint imports, traces and flags.

Runs alternate so that disk caches and load affect both alike; the medians, their ratio and
the time of the bare ``bnlint`` command on the same files (pre-commit's own share is the
difference) are printed::

    python benchmarks/hook_time.py [--repeats 7] [--modules 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
MODULE = '''"""Data helpers, number {n}: no model here."""
import json
from pathlib import Path


def read_split(root, name="train"):
    return json.loads((Path(root) / f"{{name}}_{n}.json").read_text())


def batches(items, size=64):
    return [items[i:i + size] for i in range(0, len(items), size)]
'''
SCRIPT = '''"""Train VGG11 on saved batches; a script, so bnlint never imports it."""
import torch

from models.vgg import vgg11

model = vgg11()
optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
model.train()
for images, labels in torch.load("batches.pt"):
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(model(images), labels).backward()
    optimizer.step()
'''


def hook_config() -> str:
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))
    (hook,) = [h for h in hooks if h["id"] == "bnlint"]
    return yaml.safe_dump({"repos": [{"repo": "local", "hooks": [hook]}]}, sort_keys=False)


def make_repo(root: Path, modules: int, with_model: bool) -> list[str]:
    """Write and stage the commit's files; returns their names."""
    files = {f"data/helpers_{n}.py": MODULE.format(n=n) for n in range(modules)}
    files["train.py"] = SCRIPT
    if with_model:
        files["models/__init__.py"] = ""
        files["models/vgg.py"] = (ROOT / "fixtures" / "vgg.py").read_text(encoding="utf-8")
    files[".pre-commit-config.yaml"] = hook_config()
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    return [name for name in files if name.endswith(".py")]


def timed(command: list[str], cwd: Path, env: dict) -> tuple[float, int]:
    start = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    return time.perf_counter() - start, result.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--modules", type=int, default=10,
                        help="plain modules in each commit (default: 10)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "PRE_COMMIT"))}
        env.update(PRE_COMMIT_HOME=str(Path(tmp) / "pre-commit-home"),
                   GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1",
                   PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]))
        cases = {}
        for name, with_model in (("no model", False), ("model", True)):
            repo = Path(tmp) / name.replace(" ", "_")
            repo.mkdir()
            files = make_repo(repo, args.modules, with_model)
            cases[name] = (repo, files, 1 if with_model else 0)
        hook: dict[str, list[float]] = {name: [] for name in cases}
        bare: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.repeats):
            for name, (repo, files, expected) in cases.items():
                for times, command in ((hook, [sys.executable, "-m", "pre_commit", "run"]),
                                       (bare, ["bnlint", *files])):
                    seconds, status = timed(command, repo, env)
                    if status != expected:
                        sys.exit(f"{name}: `{' '.join(command)}` exited {status}, "
                                 f"expected {expected}")
                    times[name].append(seconds)

    print(f"pre-commit hook, {args.modules} plain modules + a training script, "
          f"median of {args.repeats} runs:")
    for name in cases:
        print(f"  {name:<9} commit: hook {statistics.median(hook[name]):6.2f} s   "
              f"bare bnlint {statistics.median(bare[name]):6.2f} s")
    ratio = statistics.median(hook["model"]) / statistics.median(hook["no model"])
    print(f"  a model file makes the hook {ratio:.1f}x slower (importing torch, tracing)")


if __name__ == "__main__":
    main()
