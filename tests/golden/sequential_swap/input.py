"""Activation-then-BatchNorm written as entries of nn.Sequential and of a list: the unsafe
fix moves the BatchNorm entry before the activation (an entry on its own line moves with its
line and comment). In forward(), the BatchNorm called in the statement after the activation's
trades places with it."""

import torch
import torch.nn as nn


class MLP(nn.Module):
    def __init__(self, features=12, hidden=16, classes=3):
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(features, hidden, bias=False),
            nn.ReLU(),  # the activation comes first here
            nn.Dropout(0.1),
            nn.BatchNorm1d(hidden),
            nn.Linear(hidden, classes),
        )

    def forward(self, x):
        return self.body(x)


def conv_block(cin, cout):
    layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.GELU(), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers)


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.Sequential(conv_block(3, 8), conv_block(8, 8))
        self.norm = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = torch.relu(self.blocks(x))
        return self.fc(self.norm(x).mean((2, 3)))
