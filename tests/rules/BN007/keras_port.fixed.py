"""A ResNet stem ported from a Keras model, BatchNorm settings and all."""

from torch import nn


def conv_bn(cin, cout, stride=1):
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, padding=1, bias=False),
        nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01),  # expect: BN007
        nn.ReLU(inplace=True),
    )


class Stem(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(conv_bn(3, 32, 2), conv_bn(32, 64))
        self.head = nn.BatchNorm2d(64, momentum=0.003)  # expect: BN007

    def forward(self, x):
        return self.head(self.layers(x))
