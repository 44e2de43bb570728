"""BatchNorm settings from a config copied out of a TensorFlow training script: the momentum
is found on the built module, but the call holds no number to edit."""

from torch import nn

BN = {"eps": 1e-3, "momentum": 0.99}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, bias=False)
        self.bn = nn.BatchNorm2d(16, **BN)  # expect: BN007

    def forward(self, x):
        return self.bn(self.conv(x))
