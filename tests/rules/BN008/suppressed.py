"""A port that keeps the published order so its checkpoint loads."""

from torch import nn

model = nn.Sequential(
    nn.Linear(16, 32, bias=False),
    nn.Dropout(0.2),
    nn.BatchNorm1d(32),  # bnlint: ignore[BN008] - as published
)
