"""A toy WGAN-GP whose critic is an nn.Sequential holding BatchNorm1d, with the penalty
written out in the training loop."""

import torch
from torch import autograd, nn

from data import loader

critic = nn.Sequential(nn.Linear(2, 256), nn.BatchNorm1d(256), nn.ReLU(), nn.Linear(256, 1))
optimizer = torch.optim.Adam(critic.parameters(), lr=1e-4, betas=(0.5, 0.9))
for real, fake in loader:
    alpha = torch.rand(real.size(0), 1)
    interpolates = alpha * real + (1 - alpha) * fake
    interpolates.requires_grad_(True)
    scores = critic(interpolates).view(-1)
    gradients, = autograd.grad(scores.sum(), interpolates, create_graph=True)  # expect: BN010
    penalty = ((gradients.norm(2, dim=1) - 1) ** 2).mean()
    loss = critic(fake).mean() - critic(real).mean() + 10 * penalty
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
