"""Activation-then-BatchNorm written as nested calls in forward(): a module, a functional and
a method activation, one with dropout between, one spread over lines. The BatchNorm call
moves inside the activation's; every other argument stays with its call. A block whose
activation also feeds a skip connection cannot be reordered and is left as it is."""

import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.act = nn.ReLU(inplace=True)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return self.bn(self.act(self.conv(x)))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.block1 = Block(3, 8)
        self.block2 = Block(8, 8)
        self.conv = nn.Conv2d(8, 16, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.pool = nn.MaxPool2d(2)
        self.proj = nn.Conv2d(16, 16, 1, bias=False)
        self.drop = nn.Dropout(0.1)
        self.bn_proj = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 32, bias=False)
        self.bn_fc = nn.BatchNorm1d(32)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        x = self.block2(self.block1(x))
        x = self.pool(self.bn(F.leaky_relu(self.conv(x), 0.1)))
        x = self.bn_proj(
            self.drop(self.proj(x).relu())  # the method form
        )
        x = x.mean((2, 3))
        return self.head(self.bn_fc(F.gelu(self.fc(x), approximate="tanh")))


class Skip(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x):
        h = F.relu(self.conv(x))
        return self.bn(h) + h
