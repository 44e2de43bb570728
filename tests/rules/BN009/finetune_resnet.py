"""Transfer learning with a pretrained ResNet as a fixed feature extractor: every pretrained
parameter is frozen and a new head is trained, but model.train() puts the frozen BatchNorm
layers back in training mode at every epoch."""

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from data import train_loader, val_loader

model = torchvision.models.resnet18(weights="IMAGENET1K_V1")
for param in model.parameters():
    param.requires_grad = False
model.fc = nn.Linear(model.fc.in_features, 10)
optimizer = torch.optim.SGD(model.fc.parameters(), lr=0.001, momentum=0.9)

for epoch in range(25):
    model.train()  # expect: BN009
    for images, labels in train_loader:
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        correct = sum((model(x).argmax(1) == y).sum().item() for x, y in val_loader)
    print(f"epoch {epoch}: {correct} correct")
