"""The same MLP with BatchNorm between each layer and its activation."""

from torch import nn


class TabularMLP(nn.Module):
    def __init__(self, features=32, hidden=128, classes=2):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(features, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, classes),
        )

    def forward(self, x):
        return self.net(x)
