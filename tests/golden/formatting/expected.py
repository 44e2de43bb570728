"""Constructor calls in the shapes real code has them: exploded with trailing commas,
comments with commas in them, an explicit bias=True, a positional bias, a parenthesised
argument, a name with non-ASCII letters before the call, and a form feed (page break) line."""

import torch
from torch import nn


class Stem(nn.Module):
    def __init__(self, width=8):
        super().__init__()
        self.conv = nn.Conv2d(
            3,
            width,
            kernel_size=3,
            padding=1,  # same size out, like the paper
            bias=False,
        )

        self.bn = nn.BatchNorm2d(width)
        self.größe = nn.Conv2d(width, width, 1, bias=False)  # explicit, and wrong
        self.bn_größe = nn.BatchNorm2d(width)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        return torch.relu(self.bn_größe(self.größe(x)))


class Head(nn.Module):
    def __init__(self, width=8, classes=5):
        super().__init__()
        self.fc = nn.Linear(width, 16, False)
        self.bn = nn.BatchNorm1d(16)
        self.proj = nn.Conv2d(width, width, 3, 1, 1, 1, 1, False, "zeros")
        self.bn_proj = nn.BatchNorm2d(width)
        self.up = nn.ConvTranspose2d(width,
                                     width,
                                     (2), bias=False)
        self.bn_up = nn.BatchNorm2d(width)
        self.out = nn.Linear(16, classes)

    def forward(self, x):
        x = self.bn_up(self.up(self.bn_proj(self.proj(x))))
        return self.out(torch.relu(self.bn(self.fc(x.mean((2, 3))))))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = Stem()
        self.head = Head()

    def forward(self, x):
        return self.head(self.stem(x))
