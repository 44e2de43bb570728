"""A DCGAN discriminator with BatchNorm, trained with the standard loss and no gradient
penalty."""

import torch
from torch import nn

from data import loader

discriminator = nn.Sequential(
    nn.Conv2d(3, 64, 4, 2, 1), nn.LeakyReLU(0.2),
    nn.Conv2d(64, 128, 4, 2, 1, bias=False), nn.BatchNorm2d(128), nn.LeakyReLU(0.2),
    nn.Conv2d(128, 1, 8), nn.Flatten())
optimizer = torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
criterion = nn.BCEWithLogitsLoss()
for real, fake in loader:
    real_score, fake_score = discriminator(real), discriminator(fake)
    loss = criterion(real_score, torch.ones_like(real_score)) + criterion(
        fake_score, torch.zeros_like(fake_score))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
