"""A detector whose train() keeps its frozen backbone in eval mode, as detection code bases
do with a `norm_eval` setting."""

import torch
from torch import nn
from torchvision.models import resnet50

from data import train_loader


class Detector(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = resnet50(weights="IMAGENET1K_V2")
        self.head = nn.Conv2d(2048, 85, 1)

    def train(self, mode=True):
        super().train(mode)
        self.backbone.eval()
        return self

    def forward(self, images, targets):
        return (self.head(self.backbone(images)) - targets).pow(2).mean()


model = Detector()
for parameter in model.backbone.parameters():
    parameter.requires_grad = False
optimizer = torch.optim.SGD(model.head.parameters(), lr=0.01)
for epoch in range(12):
    model.train()
    for images, targets in train_loader:
        loss = model(images, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
