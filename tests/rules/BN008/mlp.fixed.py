"""A tabular MLP that regularises each hidden layer before normalising it."""

from torch import nn


class MLP(nn.Module):
    def __init__(self, features=20, hidden=64):
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(features, hidden, bias=False),
            nn.BatchNorm1d(hidden),  # expect: BN008
            nn.ReLU(),
            nn.Dropout(0.3),
            nn.Linear(hidden, hidden, bias=False),
            nn.BatchNorm1d(hidden),  # expect: BN008
            nn.Dropout(0.3),
        )
        self.out = nn.Linear(hidden, 1)

    def forward(self, x):
        return self.out(self.body(x))
