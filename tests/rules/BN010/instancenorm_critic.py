"""Gradient penalties on critics normalised per sample: InstanceNorm, or no normalisation."""

import torch
from torch import nn

from data import loader

critic = nn.Sequential(
    nn.Conv2d(3, 64, 4, 2, 1), nn.InstanceNorm2d(64, affine=True), nn.LeakyReLU(0.2),
    nn.Conv2d(64, 1, 4, 1, 0))
plain = nn.Sequential(nn.Linear(2, 128), nn.ReLU(), nn.Linear(128, 1))
optimizer = torch.optim.Adam([*critic.parameters(), *plain.parameters()], lr=1e-4)


def penalty(model, real, fake):
    alpha = torch.rand(real.size(0), *[1] * (real.dim() - 1))
    mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    gradients = torch.autograd.grad(model(mixed).sum(), mixed, create_graph=True)[0]
    return ((gradients.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


for (images, fake_images), (points, fake_points) in loader:
    loss = (critic(fake_images).mean() - critic(images).mean()
            + plain(fake_points).mean() - plain(points).mean()
            + 10 * penalty(critic, images, fake_images) + 10 * penalty(plain, points, fake_points))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
