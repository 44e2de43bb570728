"""WGAN-GP with a DCGAN-style critic that keeps its BatchNorm layers."""

import torch
from torch import nn

from data import loader

LATENT = 100


class Generator(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.ConvTranspose2d(LATENT, 128, 7, bias=False), nn.BatchNorm2d(128), nn.ReLU(),
            nn.ConvTranspose2d(128, 1, 4, stride=4), nn.Tanh())

    def forward(self, z):
        return self.net(z.view(-1, LATENT, 1, 1))


class Critic(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 64, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(64, 128, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(128),
            nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(128 * 7 * 7, 1))

    def forward(self, images):
        return self.net(images)


def gradient_penalty(critic, real, fake):
    alpha = torch.rand(real.size(0), 1, 1, 1)
    mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    scores = critic(mixed)
    gradients = torch.autograd.grad(  # expect: BN010
        outputs=scores, inputs=mixed, grad_outputs=torch.ones_like(scores),
        create_graph=True, retain_graph=True)[0]
    return ((gradients.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


generator, critic = Generator(), Critic()
optimizer_g = torch.optim.Adam(generator.parameters(), lr=1e-4, betas=(0.5, 0.9))
optimizer_c = torch.optim.Adam(critic.parameters(), lr=1e-4, betas=(0.5, 0.9))
for step, real in enumerate(loader):
    fake = generator(torch.randn(real.size(0), LATENT)).detach()
    loss_c = critic(fake).mean() - critic(real).mean() + 10 * gradient_penalty(critic, real, fake)
    optimizer_c.zero_grad()
    loss_c.backward()
    optimizer_c.step()
    if step % 5 == 0:
        loss_g = -critic(generator(torch.randn(real.size(0), LATENT))).mean()
        optimizer_g.zero_grad()
        loss_g.backward()
        optimizer_g.step()
