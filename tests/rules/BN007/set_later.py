"""Momentum set on every BatchNorm after construction, a pattern of ported detectors: the
finding points at each BatchNorm, and the source fix leaves the calls alone (they pass no
momentum)."""

from torch import nn


class Detector(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(8)  # expect: BN007
        self.conv2 = nn.Conv2d(8, 8, 3, bias=False)
        self.bn2 = nn.BatchNorm2d(8)  # expect: BN007
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = 0.99

    def forward(self, x):
        return self.bn2(self.conv2(self.bn1(self.conv1(x))))
