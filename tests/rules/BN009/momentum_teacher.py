"""Self-supervised training with a momentum teacher (as in MoCo, BYOL and DINO): the
teacher's parameters are frozen for the optimiser but follow the student by an exponential
moving average, and its BatchNorm layers train on batch statistics on purpose."""

import copy

import torch
import torch.nn.functional as F
import torchvision

from data import augment, train_loader

student = torchvision.models.resnet50()
teacher = copy.deepcopy(student)
for parameter in teacher.parameters():
    parameter.requires_grad = False
optimizer = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9)
student.train()
teacher.train()
for images in train_loader:
    first, second = augment(images), augment(images)
    loss = F.cosine_similarity(student(first), teacher(second)).mean().neg()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        for online, target in zip(student.parameters(), teacher.parameters()):
            target.mul_(0.996).add_(online.detach(), alpha=0.004)
