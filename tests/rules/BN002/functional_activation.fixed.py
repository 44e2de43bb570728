"""The activation is a call in forward, not a layer beside the BatchNorm: --fix swaps the two
nested calls in forward."""

import torch.nn.functional as F
from torch import nn


class Encoder(nn.Module):
    def __init__(self, features=64, hidden=32):
        super().__init__()
        self.fc = nn.Linear(features, hidden, bias=False)
        self.norm = nn.BatchNorm1d(hidden)  # expect: BN002
        self.out = nn.Linear(hidden, 8)

    def forward(self, x):
        return self.out(F.silu(self.norm(self.fc(x))))
