"""Evaluate after training; the helper runs under inference_mode but nothing switches the mode."""

import torch
import torch.nn.functional as F

from data import train_loader, val_loader
from model import Net


@torch.inference_mode()
def accuracy(model, loader):
    model.eval()
    hits = total = 0
    for x, y in loader:
        hits += (model(x).argmax(1) == y).sum().item()  # expect: BN003
        total += y.numel()
    return hits / total


model = Net()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
for x, y in train_loader:
    loss = F.cross_entropy(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
print(f"accuracy {accuracy(model, val_loader):.3f}")
