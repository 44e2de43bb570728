"""A stem whose weights come from a checkpoint that has the conv bias, kept on purpose."""

from torch import nn


class Stem(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 64, 7, stride=2, padding=3)  # bnlint: ignore[BN001]
        self.bn = nn.BatchNorm2d(64)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)

    def forward(self, x):
        return self.pool(self.bn(self.conv(x)).relu())
