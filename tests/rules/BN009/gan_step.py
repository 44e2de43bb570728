"""A GAN step that switches requires_grad off for the discriminator only while the generator
is updated, as pix2pix and CycleGAN do."""

import torch
from torch import nn

from data import loader


def set_requires_grad(net, requires_grad):
    for parameter in net.parameters():
        parameter.requires_grad = requires_grad


generator = nn.Sequential(nn.Linear(64, 128), nn.BatchNorm1d(128), nn.ReLU(), nn.Linear(128, 2))
discriminator = nn.Sequential(nn.Linear(2, 128), nn.BatchNorm1d(128), nn.LeakyReLU(0.2),
                              nn.Linear(128, 1))
optimizer_g = torch.optim.Adam(generator.parameters(), lr=2e-4)
optimizer_d = torch.optim.Adam(discriminator.parameters(), lr=2e-4)
criterion = nn.BCEWithLogitsLoss()
generator.train()
discriminator.train()
for real in loader:
    fake = generator(torch.randn(real.size(0), 64))
    set_requires_grad(discriminator, True)
    real_score, fake_score = discriminator(real), discriminator(fake.detach())
    loss_d = criterion(real_score, torch.ones_like(real_score)) + criterion(
        fake_score, torch.zeros_like(fake_score))
    optimizer_d.zero_grad()
    loss_d.backward()
    optimizer_d.step()
    set_requires_grad(discriminator, False)
    score = discriminator(fake)
    loss_g = criterion(score, torch.ones_like(score))
    optimizer_g.zero_grad()
    loss_g.backward()
    optimizer_g.step()
