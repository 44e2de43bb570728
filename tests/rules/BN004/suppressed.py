"""A research script that trains on through the validation passes on purpose, to
reproduce a published result."""

import torch
import torch.nn.functional as F

from data import train_loader, val_loader
from model import ResNet18


def evaluate(model, loader):
    model.eval()
    correct = 0
    with torch.no_grad():
        for images, labels in loader:
            correct += (model(images).argmax(1) == labels).sum().item()
    return correct / len(loader.dataset)


model = ResNet18(num_classes=10)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
model.train()
for epoch in range(30):
    for images, labels in train_loader:
        loss = F.cross_entropy(model(images), labels)  # bnlint: ignore[BN004]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(f"epoch {epoch}: accuracy {evaluate(model, val_loader):.3f}")
