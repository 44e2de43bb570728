"""The frozen backbone is put back in eval mode after every model.train(): its BatchNorm
layers keep their pretrained statistics."""

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet50

from data import train_loader


class Classifier(nn.Module):
    def __init__(self, classes):
        super().__init__()
        self.backbone = resnet50(weights="IMAGENET1K_V2")
        self.backbone.fc = nn.Identity()
        self.head = nn.Linear(2048, classes)

    def forward(self, x):
        return self.head(self.backbone(x))


model = Classifier(100)
model.backbone.requires_grad_(False)
optimizer = torch.optim.SGD(model.head.parameters(), lr=0.01)
for epoch in range(10):
    model.train()
    model.backbone.eval()
    for images, labels in train_loader:
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
