"""A tabular MLP: five Linear layers and ReLU, no normalisation."""

from torch import nn


class TabularMLP(nn.Module):
    def __init__(self, features=32, hidden=128, classes=2):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(features, hidden), nn.ReLU(),  # expect: BN005
            nn.Linear(hidden, hidden), nn.ReLU(),  # expect: BN005
            nn.Linear(hidden, hidden), nn.ReLU(),  # expect: BN005
            nn.Linear(hidden, hidden), nn.ReLU(),  # expect: BN005
            nn.Linear(hidden, classes),
        )

    def forward(self, x):
        return self.net(x)
