"""Linting builds models on the meta device, without weights: the same findings at the same
lines as a build with weights, a real build where ``__init__`` needs tensor values, and real
models wherever a model is fixed or trained."""

import textwrap

import pytest
import torch

from click.testing import CliRunner

from bnlint import engine, source
from bnlint.cli import main
from bnlint.lint import lint_specs
from bnlint.load import build, load
from conftest import FIXTURES, line_of

FIXTURE_FILES = sorted(FIXTURES.glob("*.py"))
VALUES_IN_INIT = """
import torch
import torch.nn as nn


class Warped(nn.Module):
    def __init__(self):
        super().__init__()
        width = int(torch.linspace(8, 24, 5)[2].item())  # reads a value: 16
        self.conv = nn.Conv2d(3, width, 3)
        self.bn = nn.BatchNorm2d(width)

    def forward(self, x):
        return self.bn(self.conv(x))
"""


@pytest.fixture
def built(monkeypatch):
    """Every model the analysis is given."""
    models = []
    real = engine.analyse

    def spy(model, name, codes, example=None, **options):
        models.append(model)
        return real(model, name, codes, example=example, **options)

    monkeypatch.setattr(engine, "analyse", spy)
    return models


def on_meta(model) -> bool:
    return all(t.is_meta for t in [*model.parameters(), *model.buffers()])


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: p.name)
def test_meta_build_gives_the_findings_of_a_real_build(path, built):
    meta = lint_specs([str(path)], select=["ALL"])
    models = list(built)
    # a model handed to on_model (fixing, the benchmark) is built with its weights
    real = lint_specs([str(path)], select=["ALL"], on_model=lambda *_: None)
    assert meta.findings == real.findings  # codes, messages, modules, file:line:col, fixes
    assert [m.to_dict() for m in meta.models] == [m.to_dict() for m in real.models]
    assert all(not m.notes for m in meta.models)
    assert models and all(on_meta(m) for m in models)
    assert not any(on_meta(m) for m in built[len(models):])


def test_the_fixtures_give_findings_to_compare():
    assert len(lint_specs([str(p) for p in FIXTURE_FILES], select=["ALL"]).findings) >= 20


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: p.name)
def test_meta_build_records_every_construction_site(path):
    """Not only the lines findings point at: every module's recorded site is the same."""
    for candidate in load([str(path)]).candidates:
        sites = []
        for meta in (True, False):
            model, _ = build(candidate, meta=meta)
            sites.append({name: source.recorded_site(m) for name, m in model.named_modules()})
        assert sites[0] == sites[1]
        assert any(site is not None for site in sites[0].values())


def test_an_init_that_reads_tensor_values_is_built_with_weights(tmp_path, built):
    path = tmp_path / "warped.py"
    path.write_text(textwrap.dedent(VALUES_IN_INIT), encoding="utf-8")
    report = lint_specs([str(path)])
    [finding] = report.findings
    assert (finding.code, finding.module) == ("BN001", "conv")
    assert finding.line == line_of(path, "self.conv = nn.Conv2d(3, width, 3)")
    [result] = report.models
    assert result.status == "ok" and not on_meta(built[0])
    assert result.notes == ["built with its weights: on the meta device, building the model "
                            "failed: RuntimeError: Tensor.item() cannot be called on meta tensors"]
    verbose = CliRunner().invoke(main, [str(path), "-v"]).output
    assert "built with its weights: on the meta device" in verbose
    assert "built with its weights" not in CliRunner().invoke(main, [str(path)]).output


def test_an_init_that_fails_anyway_is_reported_once_as_the_real_failure(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("import torch.nn as nn\n\n\nclass Broken(nn.Module):\n"
                    "    def __init__(self):\n        super().__init__()\n"
                    "        raise ValueError('no config')\n", encoding="utf-8")
    [result] = lint_specs([str(path)]).models
    assert result.status == "error"
    assert result.reason == "building the model failed: ValueError: no config"


def test_an_init_that_fails_for_its_own_reason_is_not_built_again_with_weights(tmp_path):
    """A large model whose constructor fails after building its layers (a missing argument it
    asserts on) would fail with weights too: building it again costs its weights' memory."""
    log = tmp_path / "devices.txt"
    path = tmp_path / "aligner.py"
    path.write_text("import torch.nn as nn\n\n\nclass Aligner(nn.Module):\n"
                    "    def __init__(self, out_features=None):\n        super().__init__()\n"
                    "        self.proj = nn.Linear(1024, 1024)\n"
                    f"        with open({str(log)!r}, 'a') as log:\n"
                    "            log.write(self.proj.weight.device.type + '\\n')\n"
                    "        assert out_features, 'pass out_features'\n", encoding="utf-8")
    [result] = lint_specs([str(path)]).models
    assert result.reason == "building the model failed: AssertionError: pass out_features"
    assert log.read_text().split() == ["meta"]


@pytest.mark.parametrize("args", [["--diff"], ["--save-fixed", "{tmp}"]])
def test_fixing_builds_models_with_weights(tmp_path, built, args):
    CliRunner().invoke(main, ["fixtures/vgg.py", *[a.format(tmp=tmp_path) for a in args]])
    assert built and not any(on_meta(m) for m in built)


def test_meta_build_leaves_tensors_made_later_on_the_cpu():
    [candidate] = load([str(FIXTURES / "resnet50.py")]).candidates
    model, note = build(candidate, meta=True)
    assert on_meta(model) and note is None
    assert torch.empty(1).device.type == "cpu"
