"""A biased layer, then an activation, then BatchNorm: moving the BatchNorm before the
activation puts it right after the biased layer, whose bias it then cancels. One run of
--fix --unsafe-fixes makes both fixes: the reorder, and bias=False on the layer."""

import torch
import torch.nn as nn


class MLP(nn.Module):
    INPUT_SHAPE = (8,)  # (batch, 8): the Linear's bias is one value per BatchNorm channel

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(8, 16, bias=False),
            nn.BatchNorm1d(16),
            nn.ReLU(),
        )
        self.fc = nn.Linear(16, 16, bias=False)
        self.bn = nn.BatchNorm1d(16)
        self.head = nn.Linear(16, 2)

    def forward(self, x):
        x = self.body(x)
        return self.head(torch.relu(self.bn(self.fc(x))))
