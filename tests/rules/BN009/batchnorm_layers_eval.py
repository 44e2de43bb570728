"""Fine-tuning with every BatchNorm layer frozen and switched to eval mode one by one after
model.train()."""

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from data import train_loader

model = torchvision.models.resnet34(weights="DEFAULT")
model.requires_grad_(False)
model.fc = nn.Linear(512, 37)
optimizer = torch.optim.SGD(model.fc.parameters(), lr=0.01)
for epoch in range(10):
    model.train()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eval()
    for images, labels in train_loader:
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
