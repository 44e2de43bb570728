"""A CNN block with channel dropout and pooling between the conv and its BatchNorm."""

from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1, bias=False),
            nn.MaxPool2d(2),
            nn.BatchNorm2d(16),  # expect: BN008
            nn.ReLU(),
            nn.Dropout2d(0.1),
            nn.Conv2d(16, 32, 3, padding=1),
        )

    def forward(self, x):
        return self.features(x)
