"""One helper builds every 3x3 conv: most feed BatchNorm, but the last one feeds the
classifier directly, so the helper's call must keep its bias. The stem is its own call."""

import torch
from torch import nn


def conv3x3(cin, cout):
    return nn.Conv2d(cin, cout, 3, padding=1)


class Block(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = conv3x3(channels, channels)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)) + x)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)  # feeds BatchNorm: fixed
        self.bn = nn.BatchNorm2d(8)
        self.blocks = nn.Sequential(Block(8), Block(8))
        self.score = conv3x3(8, 4)  # no BatchNorm after it: its bias matters

    def forward(self, x):
        x = self.blocks(torch.relu(self.bn(self.stem(x))))
        return self.score(x).mean((2, 3))
