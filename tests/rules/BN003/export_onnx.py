"""Export the trained detector backbone to ONNX for the serving team."""

import torch

from detector import Backbone

backbone = Backbone()
backbone.load_state_dict(torch.load("backbone.pt"))
example = torch.randn(1, 3, 224, 224)
torch.onnx.export(backbone, (example,), "backbone.onnx", dynamo=True)  # expect: BN003
