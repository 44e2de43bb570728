"""--save-fixed and bnlint.export: the fixed model written as code and weights, next to the
user's files and never over them, loads back into the same function."""

import importlib.util
import itertools

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import bnlint
from bnlint.cli import main
from bnlint.export import ExportError, write_model
from conftest import FIXTURES, assert_same_function, train
from fixtures_models import fixture_module

pytestmark = pytest.mark.usefixtures("one_thread")

_names = itertools.count()


def load_saved(folder):
    """Import a saved folder as a package, as ``from <folder> import load`` would."""
    spec = importlib.util.spec_from_file_location(
        f"saved_{next(_names)}", folder / "__init__.py", submodule_search_locations=[str(folder)])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.load()


@pytest.mark.parametrize("name, factory, shape, unsafe", [
    ("vgg", lambda m: m.vgg11_small(), (4, 3, 32, 32), False),
    ("act_before_bn", lambda m: m.SmallNet(), (4, 3, 32, 32), True),
    ("fixable", lambda m: m.ResidualSubNet(), (4, 3, 16, 16), False),
])
def test_saved_model_loads_back_into_the_fixed_function(tmp_path, name, factory, shape, unsafe):
    model = factory(fixture_module(name))
    train(model, shape, steps=2)
    fixed = bnlint.fix(model, unsafe=unsafe).model
    write_model(fixed, tmp_path / "saved", title="test", fixes=["BN001 conv"])
    loaded = load_saved(tmp_path / "saved")
    assert set(loaded.state_dict()) == set(fixed.state_dict())
    assert_same_function(fixed, loaded, shape)
    weights = torch.load(tmp_path / "saved" / "weights.pt", weights_only=True)
    assert set(weights) == set(fixed.state_dict())


class Scaled(nn.Module):
    """Parameters and buffers read in forward() itself, not only through layers."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.scale = nn.Parameter(torch.rand(4, 1, 1) + 0.5)
        self.register_buffer("offset", torch.randn(4, 1, 1))

    def forward(self, x):
        return self.bn(self.conv(x)) * self.scale + self.offset


def test_parameters_and_buffers_of_the_forward_itself_are_saved(tmp_path):
    model = Scaled()
    train(model, (4, 3, 8, 8), steps=2)
    fixed = bnlint.fix(model).model
    write_model(fixed, tmp_path / "saved", title="test", fixes=["BN001 conv"])
    loaded = load_saved(tmp_path / "saved")
    assert dict(loaded.named_buffers()).keys() == dict(fixed.named_buffers()).keys()
    assert_same_function(model, loaded, (4, 3, 8, 8))


class MyConv(nn.Conv2d):
    pass


def test_models_that_cannot_be_written_as_code_are_refused_with_a_reason(tmp_path):
    custom = nn.Sequential(MyConv(3, 4, 3), nn.BatchNorm2d(4))
    with pytest.raises(ExportError, match="`0` .MyConv. cannot be written"):
        write_model(custom, tmp_path / "a", title="t", fixes=[])
    with pytest.raises(ExportError, match="cannot be traced as one graph"):
        write_model(fixture_module("dynamic").DynamicNet(), tmp_path / "b", title="t", fixes=[])
    assert list(tmp_path.iterdir()) == []


def test_cli_saves_next_to_the_users_files_and_never_over_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "vgg.py").write_text((FIXTURES / "vgg.py").read_text())
    first = CliRunner().invoke(main, ["vgg.py:vgg11_small()", "--save-fixed", "fixed"])
    assert first.exit_code == 1  # the findings are still in the source
    folder = tmp_path / "fixed" / "vgg_vgg11_small"
    assert "fixed model saved to fixed/vgg_vgg11_small (8 fixes)" in first.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["__init__.py", "weights.pt"]
    loaded = load_saved(folder)
    assert not any(m.bias is not None for m in loaded.modules() if isinstance(m, nn.Conv2d))
    assert loaded(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert (tmp_path / "vgg.py").read_text() == (FIXTURES / "vgg.py").read_text()

    written = (folder / "__init__.py").read_bytes()
    again = CliRunner().invoke(main, ["vgg.py:vgg11_small()", "--save-fixed", "fixed"])
    assert "already exists; not overwriting it" in again.stderr
    assert (folder / "__init__.py").read_bytes() == written
