"""A VGG-style network whose layers come from a configuration list."""

import torch.nn as nn

CFG = [16, "M", 32, "M", 32]


class VGGish(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.features = self._make_layers(CFG)
        self.classifier = nn.Linear(32, num_classes)

    def forward(self, x):
        out = self.features(x)
        return self.classifier(out.mean((2, 3)))

    def _make_layers(self, cfg):
        layers = []
        in_channels = 3
        for x in cfg:
            if x == "M":
                layers += [nn.MaxPool2d(kernel_size=2, stride=2)]
            else:
                layers += [
                    nn.Conv2d(in_channels, x, kernel_size=3, padding=1),
                    nn.BatchNorm2d(x),
                    nn.ReLU(inplace=True),
                ]
                in_channels = x
        return nn.Sequential(*layers)
