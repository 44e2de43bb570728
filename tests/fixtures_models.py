"""Models built from the bundled fixtures, in states tests need."""

import importlib.util
import sys

import torch

from conftest import FIXTURES


def fixture_module(name: str):
    """``fixtures/<name>.py``, imported once and registered under its name, so that bnlint
    finds the source of its classes."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, FIXTURES / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def trained_vgg(steps: int = 3):
    """A small VGG after a few SGD steps, so its BatchNorm running statistics are not trivial."""
    torch.manual_seed(0)
    model = fixture_module("vgg").vgg11_small()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(steps):
        x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model
