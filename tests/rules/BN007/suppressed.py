"""A reproduction that keeps a published checkpoint's setting on purpose."""

from torch import nn


class Repro(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, bias=False)
        self.bn = nn.BatchNorm2d(8, momentum=0.9)  # bnlint: ignore[BN007] - as published

    def forward(self, x):
        return self.bn(self.conv(x))
