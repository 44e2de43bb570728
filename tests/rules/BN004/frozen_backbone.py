"""Fine-tune a classifier head on a frozen backbone kept in eval mode on purpose."""

import torch
import torch.nn.functional as F

from data import train_loader
from model import PretrainedNet

model = PretrainedNet()
for parameter in model.backbone.parameters():
    parameter.requires_grad = False
optimizer = torch.optim.SGD(model.head.parameters(), lr=0.01)
model.train()
model.backbone.eval()
for epoch in range(5):
    for x, y in train_loader:
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
