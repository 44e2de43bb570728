"""A frozen encoder that is never switched at all: a new module starts in training mode, so
its BatchNorm layers train on their statistics from the first step."""

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from data import train_loader

encoder = torchvision.models.mobilenet_v3_small(weights="DEFAULT")
encoder.requires_grad_(False)
encoder.classifier = nn.Identity()
classifier = nn.Linear(576, 5)
optimizer = torch.optim.Adam(classifier.parameters(), lr=1e-3)
for images, labels in train_loader:
    features = encoder(images)  # expect: BN009
    loss = F.cross_entropy(classifier(features), labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
