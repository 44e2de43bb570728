"""Only layers without BatchNorm are frozen: the word embeddings of a text classifier and
the classifier head of a ResNet."""

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from data import train_loader

embedding = nn.Embedding(30000, 128)
embedding.requires_grad_(False)
model = torchvision.models.resnet18()
for parameter in model.fc.parameters():
    parameter.requires_grad = False
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
model.train()
for tokens, images, labels in train_loader:
    loss = F.cross_entropy(model(images) + embedding(tokens).mean(1), labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
