"""A model whose constructor fills a lookup table far larger than the memory limit the test
sets, then a small model the run must still check."""

import time

import torch.nn as nn


class Hog(nn.Module):
    def __init__(self):
        super().__init__()
        self.table = b"\x01" * (1536 * 2**20)  # 1.5 GiB, resident
        self.conv = nn.Conv2d(3, 8, 3)
        time.sleep(30)  # still building when the limit is met

    def forward(self, x):
        return self.conv(x)


class AfterHog(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x):
        return self.bn(self.conv(x))
