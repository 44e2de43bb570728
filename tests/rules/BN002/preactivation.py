"""A pre-activation residual block (BatchNorm, ReLU, conv), as in PreAct-ResNet: a different,
correct order."""

import torch.nn.functional as F
from torch import nn


class PreActBlock(nn.Module):
    def __init__(self, channels=32):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)

    def forward(self, x):
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return out + x


class PreActNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1, bias=False)
        self.blocks = nn.Sequential(PreActBlock(), PreActBlock())

    def forward(self, x):
        return self.blocks(self.stem(x))
