"""A self-normalising network: SELU keeps activations normalised without BatchNorm."""

from torch import nn


class SNN(nn.Module):
    def __init__(self, features=20, width=64):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(features, width), nn.SELU(),
            nn.Linear(width, width), nn.SELU(),
            nn.Linear(width, width), nn.SELU(),
            nn.Linear(width, width), nn.SELU(),
            nn.Linear(width, 1),
        )

    def forward(self, x):
        return self.net(x)
