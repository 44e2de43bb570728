"""A segmentation model whose pretrained backbone is frozen, trained after one
model.train() that also switches the backbone's BatchNorm layers to training mode."""

import torch
import torch.nn.functional as F
from torch import nn

from data import train_loader


class Encoder(nn.Module):
    def __init__(self, width=64):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())
        self.down = nn.Sequential(nn.Conv2d(width, 2 * width, 3, stride=2, bias=False),
                                  nn.BatchNorm2d(2 * width), nn.ReLU())

    def forward(self, x):
        return self.down(self.stem(x))


class Segmenter(nn.Module):
    def __init__(self, classes):
        super().__init__()
        self.backbone = Encoder()
        self.backbone.load_state_dict(torch.load("encoder.pt"))
        self.head = nn.Conv2d(128, classes, 1)

    def forward(self, x):
        logits = self.head(self.backbone(x))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear")


def freeze(module):
    for parameter in module.parameters():
        parameter.requires_grad = False


model = Segmenter(21)
freeze(model.backbone)
optimizer = torch.optim.Adam(model.head.parameters(), lr=1e-3)
model.train()  # expect: BN009
for epoch in range(10):
    for images, masks in train_loader:
        loss = F.cross_entropy(model(images), masks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
