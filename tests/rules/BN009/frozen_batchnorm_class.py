"""A backbone built with FrozenBatchNorm2d, which normalises with fixed statistics in
either mode."""

import torch
from torchvision.models import resnet50
from torchvision.ops import FrozenBatchNorm2d

from data import train_loader

backbone = resnet50(weights="IMAGENET1K_V2", norm_layer=FrozenBatchNorm2d)
for parameter in backbone.parameters():
    parameter.requires_grad = False
head = torch.nn.Linear(1000, 10)
optimizer = torch.optim.SGD(head.parameters(), lr=0.01)
backbone.train()
for images, labels in train_loader:
    loss = torch.nn.functional.cross_entropy(head(backbone(images)), labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
