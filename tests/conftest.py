"""What many tests share: paths, fixtures and helpers, imported as ``from conftest import ...``
(never from another test file)."""

import importlib.util
import itertools
import json
import os
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
# float32 forward passes of the same function in a different order of operations
TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}
_names = itertools.count()


@pytest.fixture(scope="session", autouse=True)
def _run_from_project_root():
    """Paths in reports are relative to the working directory, as users see them."""
    before = os.getcwd()
    os.chdir(ROOT)
    yield
    os.chdir(before)


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture(scope="module")
def one_thread():
    """For a module of tiny models (``pytestmark = pytest.mark.usefixtures("one_thread")``):
    one thread runs them fastest, and several threads on a busy machine mostly wait for each
    other."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def project(tmp_path, monkeypatch):
    """An empty project folder as the working directory (bnlint edits only files below it)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def lint_code(tmp_path):
    """Write a model file and lint it as the command line would; returns the Report."""
    from bnlint.lint import lint_specs

    def run(code: str, *, name: str = "model_file.py", spec_suffix: str = "", **options):
        path = tmp_path / name
        path.write_text(textwrap.dedent(code), encoding="utf-8")
        return lint_specs([f"{path}{spec_suffix}"], **options)

    return run


def line_of(path, needle: str) -> int:
    """1-based number of the first line of ``path`` containing ``needle``."""
    for number, text in enumerate(Path(path).read_text().splitlines(), 1):
        if needle in text:
            return number
    raise AssertionError(f"{needle!r} not in {path}")


def run_bnlint(*args, cwd=None, input=None):
    """Run the command line in-process from ``cwd`` (by default the working directory), where
    paths are shown relative to and the folder --fix may edit, with ``input`` on stdin; returns
    click's Result (``stdout`` holds the report or the diff)."""
    from click.testing import CliRunner

    from bnlint.cli import main

    before = os.getcwd()
    os.chdir(cwd or before)
    try:
        return CliRunner().invoke(main, [str(arg) for arg in args], input=input)
    finally:
        os.chdir(before)


def import_fresh(path: Path):
    """Import a file under a name never used before, so an edited file is read again (and
    registered, so that bnlint finds the source of its classes)."""
    spec = importlib.util.spec_from_file_location(f"edited_{next(_names)}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def batch(shape, seed):
    import torch

    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator)


def train(model, shape, steps: int, seed: int = 0) -> None:
    """A few SGD steps on random data: weights, biases and running statistics all move."""
    import torch

    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    dtype = next(model.parameters()).dtype
    for step in range(steps):
        torch.manual_seed(seed + step)
        out = model(batch(shape, seed + step).to(dtype) * 2 + 1)
        loss = out.square().mean() + out.mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def assert_same_function(original, fixed, shape, seed: int = 100) -> None:
    """Same outputs in training mode (which also updates both running means) and then in eval
    mode, on data whose per-channel mean is far from zero."""
    import torch

    x = batch(shape, seed) * 3 + 2
    for mode in (True, False):
        original.train(mode)
        fixed.train(mode)
        torch.manual_seed(seed)
        expected = original(x)
        torch.manual_seed(seed)
        torch.testing.assert_close(fixed(x), expected, **TOLERANCE)


def shaped_graph(model, *example):
    """``model`` traced as bnlint traces it (in one piece), with the shape of every value
    recorded from ``example``, if given, as an example input records it
    (``node.meta["tensor_meta"]``).
    The graph calls the model's own layers, so a graph fix changes ``model``."""
    import torch
    from torch.fx.passes.shape_prop import ShapeProp

    from bnlint.trace import trace_model

    [unit] = trace_model(model).units
    if not example:
        return unit.gm
    training = model.training
    model.eval()  # leaves the running statistics as they are
    with torch.no_grad():
        ShapeProp(unit.gm).propagate(*example)
    model.train(training)
    return unit.gm


# --- notebooks ---------------------------------------------------------------------------------

KERNEL = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
          "language_info": {"name": "python", "version": "3.11.7"}}


def code_cell(source: str, outputs=(), count=None, **metadata) -> dict:
    return {"cell_type": "code", "execution_count": count, "metadata": metadata,
            "outputs": list(outputs), "source": source.splitlines(keepends=True)}


def markdown_cell(source: str) -> dict:
    return {"cell_type": "markdown", "metadata": {}, "source": source.splitlines(keepends=True)}


def write_notebook(path, *cells, metadata=KERNEL) -> str:
    """A notebook as Jupyter writes it (one-space indent, non-ASCII kept)."""
    text = json.dumps({"cells": list(cells), "metadata": metadata, "nbformat": 4,
                       "nbformat_minor": 5}, indent=1, ensure_ascii=False) + "\n"
    path.write_text(text, encoding="utf-8")
    return text
