"""F.dropout in forward(), before the BatchNorm: found, fixed by bnlint.fix, not in the source."""

import torch.nn.functional as F
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(32, 64, bias=False)
        self.bn = nn.BatchNorm1d(64)  # expect: BN008

    def forward(self, x):
        x = F.dropout(self.fc(x), 0.2, self.training)
        return F.relu(self.bn(x))
