"""A tabular model whose BatchNorm takes eps and momentum by position, as in a TF config."""

from torch import nn


class Tabular(nn.Module):
    def __init__(self, features=20):
        super().__init__()
        self.fc = nn.Linear(features, 64, bias=False)
        self.bn = nn.BatchNorm1d(64, 1e-3, 0.1)  # expect: BN007
        self.out = nn.Linear(64, 1)

    def forward(self, x):
        return self.out(self.bn(self.fc(x)).relu())
