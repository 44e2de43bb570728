"""Checked with BN900 alone, BN001 does not run: its suppression is not judged."""

from torch import nn


class Stem(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)  # bnlint: ignore[BN001]
        self.bn = nn.BatchNorm2d(64)

    def forward(self, x):
        return self.bn(self.conv(x)).relu()
