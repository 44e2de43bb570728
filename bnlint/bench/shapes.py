"""The input shape a model is benchmarked with: given, declared in ``INPUT_SHAPE``, or found by
probing the model with common shapes. Every probe runs on a deep copy in eval mode."""

from __future__ import annotations

import copy
import sys
import traceback
from collections.abc import Iterator

import torch
from torch import nn

from bnlint.bench.results import BenchError

IMAGE_SIZES = (32, 28, 64, 96, 128, 224, 16, 8)
SEQUENCE_LENGTHS = (128, 64, 256, 32, 1000, 16)
VOLUME_SIZES = (16, 32, 8)


def declared_shape(model: nn.Module) -> tuple[int, ...] | None:
    """``INPUT_SHAPE`` on the model's class, or at the top of the file that defines it."""
    shape = getattr(type(model), "INPUT_SHAPE", None)
    if shape is None:
        shape = getattr(sys.modules.get(type(model).__module__), "INPUT_SHAPE", None)
    if shape is None:
        return None
    try:
        shape = tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        raise BenchError(f"INPUT_SHAPE must be a tuple of ints, not {shape!r}") from None
    return shape


def candidate_shapes(model: nn.Module) -> Iterator[tuple[int, ...]]:
    """Input shapes worth trying, from the model's first conv or linear layer, then images."""
    first = next((m for m in model.modules()
                  if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))), None)
    if isinstance(first, nn.Linear):
        yield (first.in_features,)
    elif isinstance(first, nn.modules.conv._ConvNd):
        channels = first.out_channels if first.transposed else first.in_channels
        spatial = len(first.kernel_size)
        sizes = {1: SEQUENCE_LENGTHS, 2: IMAGE_SIZES, 3: VOLUME_SIZES}[spatial]
        for size in sizes:
            yield (channels, *(size,) * spatial)
    for channels in (3, 1):
        for size in IMAGE_SIZES:
            yield (channels, size, size)


class _Rejected(BenchError):
    """The model raised on an input: a probe to try with another shape."""


def _forward_copy(model: nn.Module, inputs: torch.Tensor, device, failure: str) -> torch.Tensor:
    """The output of a deep copy of ``model`` in eval mode: the user's model, its running
    statistics and its mode are left alone. ``failure`` begins the message if it raises."""
    probe = copy.deepcopy(model).to(device).eval()
    try:
        with torch.no_grad():
            out = probe(inputs.to(device))
    except Exception as exc:  # noqa: BLE001 - the user's forward may raise anything
        raise _Rejected(f"{failure}: {type(exc).__name__}: {exc}", traceback.format_exc()) from None
    if not isinstance(out, torch.Tensor):
        raise BenchError(f"the model returns {type(out).__name__}; the benchmark needs a model "
                         "that returns one tensor")
    return out


def find_input_shape(model: nn.Module, input_shape,
                     device) -> tuple[tuple[int, ...], str, torch.Tensor]:
    """(input shape, how it was found, the output for a batch of two)."""
    if input_shape is not None:
        shape, origin = tuple(input_shape), "from --input-shape"
    else:
        shape, origin = declared_shape(model), "from INPUT_SHAPE"
    if shape is not None:
        dims = ", ".join(map(str, shape))
        failure = f"the model does not accept inputs of shape (N, {dims}) ({origin})"
        return shape, origin, _forward_copy(model, torch.randn(2, *shape), device, failure)
    tried = 0
    for shape in dict.fromkeys(candidate_shapes(model)):
        tried += 1
        try:
            out = _forward_copy(model, torch.randn(2, *shape), device, "probe")
            return shape, "found by probing", out
        except _Rejected:
            continue
    raise BenchError(f"found no input shape the model accepts (tried {tried} common shapes); "
                     "give one with --input-shape, e.g. --input-shape 3,32,32, or bring data "
                     "with --data module:function")

