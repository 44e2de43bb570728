"""Activation-then-BatchNorm written as consecutive assignments in forward(): the same name
reassigned, dropout between, new names, and an activation nested in the assignment before.
The calls trade places; each statement still assigns what it did. Where something else runs
between the two statements, the order is left to the user (and the finding is not marked
fixable)."""

import torch
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.act1 = nn.SiLU()
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.drop = nn.Dropout2d(0.1)
        self.bn2 = nn.BatchNorm2d(8)
        self.conv3 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 8, bias=False)
        self.bn4 = nn.BatchNorm1d(8)

    def forward(self, x):
        x = self.conv1(x)
        x = self.act1(x)
        x = self.bn1(x)

        x = self.conv2(x)
        x = F.relu(x, inplace=True)  # a comment stays on its line
        x = self.drop(x)
        x = self.bn2(x)

        hidden = torch.tanh(self.conv3(x))
        out = self.bn3(hidden)

        h = F.relu(self.fc(out.mean((2, 3))))
        scale = 2.0
        return self.bn4(h) * scale
