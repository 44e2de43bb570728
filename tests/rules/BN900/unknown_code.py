"""A stem whose comment names a code no rule has: it silences nothing, whatever ran."""

from torch import nn


class Stem(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)  # bnlint: ignore[BN01]  # expect: BN900
        self.bn = nn.BatchNorm2d(64)

    def forward(self, x):
        return self.bn(self.conv(x)).relu()
