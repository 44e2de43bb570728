"""Score a folder of images with a trained classifier, in eval mode."""

import sys

import torch

from classifier import Classifier
from data import load_images

model = Classifier(num_classes=10)
model.load_state_dict(torch.load("classifier.pt", map_location="cpu"))
model.eval()

images = load_images(sys.argv[1])
with torch.no_grad():
    scores = model(images).softmax(1)
print(scores.argmax(1).tolist())
