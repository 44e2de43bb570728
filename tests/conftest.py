import os
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"


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


def run_bnlint(*args, cwd):
    """Run the command line in-process from ``cwd``, where paths are shown relative to and the
    folder --fix may edit; returns click's Result (``stdout`` holds the report or the diff)."""
    from click.testing import CliRunner

    from bnlint.cli import main

    before = os.getcwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(main, [str(arg) for arg in args])
    finally:
        os.chdir(before)
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
