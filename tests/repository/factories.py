"""One architecture offered at three widths, as model zoos do, and a module-level instance that
a factory returns."""

import torch.nn as nn


class Wide(nn.Module):
    def __init__(self, width: int = 8):
        super().__init__()
        self.fc = nn.Linear(16, width)
        self.bn = nn.BatchNorm1d(width)

    def forward(self, x):
        return self.bn(self.fc(x))


def wide_small():
    return Wide(8)


def wide_medium():
    return Wide(16)


def wide_large():
    return Wide(32)


shared = Wide(4)


def shared_model():
    return shared
