"""A port of a published model that normalises after the activation; the order is kept so its
checkpoint still loads and reproduces the paper's numbers."""

from torch import nn


class PaperNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 5, bias=False),
            nn.ReLU(),
            nn.BatchNorm2d(16),  # bnlint: ignore[BN002] - reproduces the paper
            nn.MaxPool2d(2),
        )

    def forward(self, x):
        return self.body(x)
