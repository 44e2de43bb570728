"""A small trainer class: fit() validates at the end of each epoch through a method."""

import torch
import torch.nn.functional as F


class Trainer:
    def __init__(self, model, train_loader, val_loader, lr=1e-3):
        self.model = model
        self.train_loader = train_loader
        self.val_loader = val_loader
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=lr)

    def validate(self):
        self.model.eval()
        with torch.no_grad():
            losses = [F.cross_entropy(self.model(x), y).item() for x, y in self.val_loader]
        return sum(losses) / len(losses)

    def fit(self, epochs):
        for epoch in range(epochs):
            self.model.train()
            for x, y in self.train_loader:
                loss = F.cross_entropy(self.model(x), y)  # expect: BN004
                self.optimizer.zero_grad()
                loss.backward()
                self.optimizer.step()
            print(f"epoch {epoch}: validation loss {self.validate():.4f}")


if __name__ == "__main__":
    from data import train_loader, val_loader
    from model import Net

    Trainer(Net(), train_loader, val_loader).fit(epochs=5)
