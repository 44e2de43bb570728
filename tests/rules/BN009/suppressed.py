"""Adapting BatchNorm statistics to a new domain on purpose, with the weights frozen."""

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from data import target_loader

model = torchvision.models.resnet50(weights="DEFAULT")
for parameter in model.parameters():
    parameter.requires_grad = False
model.fc = nn.Linear(2048, 31)
optimizer = torch.optim.SGD(model.fc.parameters(), lr=0.01)
model.train()  # bnlint: ignore[BN009]
for images, labels in target_loader:
    loss = F.cross_entropy(model(images), labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
