"""Dropout where it belongs: after the last BatchNorm, before a layer, with p=0, alpha dropout,
and a functional dropout switched off."""

import torch.nn.functional as F
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(32, 64, bias=False),
            nn.BatchNorm1d(64),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(64, 64, bias=False),
            nn.BatchNorm1d(64),
            nn.ReLU(),
            nn.Dropout(0.0),
            nn.BatchNorm1d(64),
            nn.AlphaDropout(0.1),
            nn.BatchNorm1d(64),
        )
        self.bn = nn.BatchNorm1d(64)
        self.head = nn.Sequential(nn.Dropout(0.5), nn.Linear(64, 10))

    def forward(self, x):
        x = self.body(x)
        x = self.bn(F.dropout(x, 0.5, training=False))
        return self.head(x)
