"""A VGG-style block: each convolution keeps its default bias and feeds BatchNorm."""

from torch import nn


class ConvBlock(nn.Module):
    def __init__(self, channels=(3, 32, 64)):
        super().__init__()
        layers = []
        for cin, cout in zip(channels, channels[1:]):
            layers += [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),  # expect: BN001
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]
        self.body = nn.Sequential(*layers, nn.MaxPool2d(2))

    def forward(self, x):
        return self.body(x)
