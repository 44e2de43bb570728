"""Train with a validation pass after every epoch; train() is called once, before the loop."""

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
for epoch in range(30):
    model.train()
    for images, labels in train_loader:
        loss = F.cross_entropy(model(images), labels)  # expect: BN004
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(f"epoch {epoch}: accuracy {evaluate(model, val_loader):.3f}")
