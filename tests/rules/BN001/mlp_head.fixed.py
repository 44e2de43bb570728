"""A classifier head: pooled features, a hidden Linear with BatchNorm1d, then the logits."""

import torch.nn.functional as F
from torch import nn


class Head(nn.Module):
    def __init__(self, features=256, hidden=128, classes=10):
        super().__init__()
        self.hidden = nn.Linear(features, hidden, bias=False)  # expect: BN001
        self.norm = nn.BatchNorm1d(hidden)
        self.logits = nn.Linear(hidden, classes)

    def forward(self, x):
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.logits(F.relu(self.norm(self.hidden(x))))
