"""A plain CNN built in a loop: one line builds every conv, so one finding stands for all."""

from torch import nn


def plain_cnn(depth=4, width=32, classes=10):
    layers, channels = [], 3
    for _ in range(depth):
        layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]  # expect: BN005
        channels = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, classes))
