"""One helper builds the convolutions of the body, which feed BatchNorm, and of the head,
which does not: `bias=False` in the helper would change the head, so --fix leaves it."""

from torch import nn


def conv3x3(cin, cout):
    return nn.Conv2d(cin, cout, 3, padding=1)  # expect: BN001


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = conv3x3(3, 16)
        self.bn = nn.BatchNorm2d(16)
        self.head = conv3x3(16, 10)

    def forward(self, x):
        return self.head(self.bn(self.conv(x)).relu()).mean((2, 3))
