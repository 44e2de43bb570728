"""PyTorch momenta, the last-batch choice and BatchNorms whose momentum is never used."""

from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, bias=False)
        self.default = nn.BatchNorm2d(8)
        self.slow = nn.BatchNorm2d(8, momentum=0.01)
        self.half = nn.BatchNorm2d(8, momentum=0.5)
        self.cumulative = nn.BatchNorm2d(8, momentum=None)
        self.last_batch = nn.BatchNorm2d(8, momentum=1.0)
        self.batch_stats = nn.BatchNorm2d(8, momentum=0.99, track_running_stats=False)
        self.unused = nn.BatchNorm2d(8, momentum=0.99)

    def forward(self, x):
        x = self.conv(x)
        x = self.slow(self.default(x)) + self.half(x) + self.cumulative(x)
        return self.batch_stats(self.last_batch(x))
