"""Models whose constructors need arguments, built in the file's own code with literal ones."""

from functools import partial

import torch
import torch.nn as nn

CFG = {"tiny": [8, "M", 16], "small": [16, "M", 32]}


class TinyVGG(nn.Module):
    def __init__(self, name, num_classes=10):
        super().__init__()
        layers, channels = [], 3
        for x in CFG[name]:
            if x == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(channels, x, 3, padding=1), nn.BatchNorm2d(x), nn.ReLU()]
                channels = x
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


class Head(nn.Module):
    def __init__(self, features, classes):
        super().__init__()
        self.fc = nn.Linear(features, classes)
        self.bn = nn.BatchNorm1d(classes)

    def forward(self, x):
        return self.bn(self.fc(x))


class Unused(nn.Module):
    def __init__(self, size, bias=True):
        super().__init__()
        self.fc = nn.Linear(size, size, bias=bias)

    def forward(self, x):
        return self.fc(x)


head = partial(Head, 32, 10)
bias_free = partial(Unused, bias=False)  # still needs its size: not a way to build one


def test():
    net = TinyVGG("large")  # no such configuration: the next call is used
    net = TinyVGG("tiny")
    print(net(torch.randn(2, 3, 8, 8)).shape)


if __name__ == "__main__":
    test()
