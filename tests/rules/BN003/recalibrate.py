"""After pruning, re-estimate BatchNorm statistics: an explicit train() right before the
no_grad passes says it is on purpose."""

import torch

from data import calibration_loader
from model import Net, prune

model = prune(Net(), amount=0.3)
model.train()
with torch.no_grad():
    for images, _ in calibration_loader:
        model(images)
model.eval()
torch.save(model.state_dict(), "pruned.pt")
