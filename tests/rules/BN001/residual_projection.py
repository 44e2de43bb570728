"""The projection's output feeds BatchNorm and the residual sum: its bias still counts there."""

from torch import nn


class Block(nn.Module):
    def __init__(self, cin=16, cout=32):
        super().__init__()
        self.project = nn.Conv2d(cin, cout, 1)
        self.bn = nn.BatchNorm2d(cout)
        self.conv = nn.Conv2d(cout, cout, 3, padding=1, bias=False)

    def forward(self, x):
        y = self.project(x)
        return self.conv(self.bn(y).relu()) + y
