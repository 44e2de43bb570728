"""Example inputs: what a model's forward is called with when bnlint has to run it (to record
shapes, to trace what torch.fx cannot follow, or to benchmark it).

One order decides it, for the command line, the API and the benchmark alike (``resolve``):

1. an example given explicitly (``--example file.py:EXPR``, ``check(model, example=...)``);
2. ``example_input()``, a function in the model's file;
3. ``--input-shape``;
4. ``INPUT_SHAPE``, on the model's class or in its file;
5. probing: the first of a few common shapes that the model accepts, tried on a copy whose
   weights live on the meta device, so it costs no memory for weights or activations.

Nothing here changes the user's model. torch is imported only when a tensor must be made.
"""

from __future__ import annotations

import copy
import itertools
import sys
import traceback
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from bnlint.load import LoadError, evaluate
from bnlint.files import display_path

FROM_EXAMPLE = "from --example"
FROM_FUNCTION = "from example_input()"
FROM_OPTION = "from --input-shape"
FROM_DECLARATION = "from INPUT_SHAPE"
PROBED = "found by probing"
GIVEN = "given"

BATCH = 2  # samples in an example made from a shape: BatchNorm in training mode needs two
IMAGE_SIZES = (32, 28, 64, 96, 128, 224, 16, 8)
SEQUENCE_LENGTHS = (128, 64, 256, 32, 1000, 16)
VOLUME_SIZES = (16, 32, 8)


@dataclass(frozen=True)
class Example:
    """The arguments of one forward call, and where they came from (``from --example``,
    ``from example_input()``, ``from --input-shape``, ``from INPUT_SHAPE``, ``found by probing``)."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    origin: str = GIVEN

    def describe(self) -> str:
        """``a tensor (2, 3, 32, 32) from INPUT_SHAPE``, ``a GraphBatch from --example``."""
        parts = [_describe(a) for a in self.args]
        parts += [f"{name}={_describe(value)}" for name, value in self.kwargs.items()]
        return f"{', '.join(parts) or 'no arguments'} {self.origin}"

    def shape(self) -> tuple[int, ...] | None:
        """One sample's shape when the forward takes a single tensor, else ``None``."""
        if len(self.args) == 1 and not self.kwargs and _is_tensor(self.args[0]):
            return tuple(self.args[0].shape[1:])
        return None


class ExampleError(LoadError):
    """An example input that cannot be had: one line for the user, the traceback (if any) for
    --verbose."""


def _is_tensor(value) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def _describe(value) -> str:
    if _is_tensor(value):
        return f"a tensor {tuple(value.shape)}"
    if type(value) in (list, tuple, dict):
        return f"a {type(value).__name__} of {len(value)}"
    return f"a {type(value).__name__}"


def as_example(value, origin: str = GIVEN) -> Example:
    """The forward's arguments from what a user gives: an ``Example`` as it is; a plain tuple
    as positional arguments, or as ``(args, kwargs)`` when it is a tuple and a dict; anything
    else (a tensor, a list, a batch object, a named tuple) as the single argument."""
    if isinstance(value, Example):
        return value
    if type(value) is tuple:
        if len(value) == 2 and type(value[0]) is tuple and isinstance(value[1], dict):
            return Example(value[0], dict(value[1]), origin)
        return Example(value, {}, origin)
    return Example((value,), {}, origin)


def load_example(spec: str) -> Example:
    """``--example``: a ``file.py:EXPR`` or ``package.module:EXPR`` spec, evaluated as a model
    spec is."""
    try:
        return as_example(evaluate(spec), FROM_EXAMPLE)
    except LoadError as exc:
        raise ExampleError(str(exc), exc.detail) from None


def from_shape(shape: Iterable[int], origin: str) -> Example:
    """A batch of random values, ``shape`` being one sample's."""
    import torch

    return Example((torch.randn(BATCH, *shape),), {}, origin)


# --- the order ---------------------------------------------------------------------------------

def resolve(model, example=None, *, input_shape: Iterable[int] | None = None,
            homes: Iterable[str] = (), probing: bool = True) -> Example | None:
    """The input for ``model``'s forward, by the order above, or ``None`` when no shape tried
    fits. ``example`` is anything ``as_example`` takes; ``homes`` name modules besides the
    one defining the model's class where ``example_input`` and ``INPUT_SHAPE`` may be (the
    file that named the model). ``probing=False`` stops before probing, which runs the model
    and so costs time (the first run of a model on the meta device imports torch's compiler
    stack): linting probes only where it must run a forward (``probe``)."""
    if example is not None:
        return as_example(example)
    modules = [sys.modules[name] for name in dict.fromkeys((*homes, type(model).__module__))
               if name in sys.modules]
    for module in modules:
        if hasattr(module, "example_input"):
            return _call_example_input(module)
    if input_shape is not None:
        return from_shape(input_shape, FROM_OPTION)
    shape = declared_shape(model, modules)
    if shape is not None:
        return from_shape(shape, FROM_DECLARATION)
    return probe(model) if probing else None


def _where(module) -> str:
    return display_path(getattr(module, "__file__", None)) or module.__name__


def _call_example_input(module) -> Example:
    function = module.example_input
    where = _where(module)
    if not callable(function):
        raise ExampleError(f"example_input in {where} must be a function that returns the "
                           "forward's input")
    try:
        value = function()
    except Exception as exc:  # noqa: BLE001 - the user's function may raise anything
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        raise ExampleError(f"example_input() in {where} failed: {last}",
                           traceback.format_exc()) from None
    if value is None:
        raise ExampleError(f"example_input() in {where} returned None; return the forward's "
                           "argument, a tuple of arguments, or a tuple and a dict")
    return as_example(value, FROM_FUNCTION)


def declared_shape(model, modules: Iterable = ()) -> tuple[int, ...] | None:
    """``INPUT_SHAPE`` on the model's class, else in the first of ``modules`` that has one."""
    shape, where = getattr(type(model), "INPUT_SHAPE", None), type(model).__name__
    for module in modules:
        if shape is not None:
            break
        shape, where = getattr(module, "INPUT_SHAPE", None), _where(module)
    if shape is None:
        return None
    try:
        return tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        raise ExampleError(
            f"INPUT_SHAPE in {where} must be a tuple of ints, not {shape!r}") from None


# --- probing -----------------------------------------------------------------------------------

def candidate_shapes(model) -> Iterator[tuple[int, ...]]:
    """Input shapes worth trying, from the model's first conv or linear layer, then images."""
    from torch import nn

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


def probe(model) -> Example | None:
    """The first candidate shape a copy of ``model`` accepts, in eval mode. The copy's weights
    live on the meta device; only where no shape runs there (a forward that reads tensor
    values) are the shapes tried again on a copy with values."""
    import torch

    shapes = list(dict.fromkeys(candidate_shapes(model)))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = _first_accepted(_meta_copy(model), shapes)
        if found is None:
            found = _first_accepted(_real_copy(model), shapes)
    return None if found is None else from_shape(found, PROBED)


def _first_accepted(model, shapes) -> tuple[int, ...] | None:
    """The first of ``shapes`` that ``model`` (a copy) runs on, on the device of its weights."""
    import torch

    if model is None:
        return None
    model.eval()
    device = next(itertools.chain(model.parameters(), model.buffers()), torch.empty(0)).device
    for shape in shapes:
        try:
            model(torch.randn(BATCH, *shape, device=device))
        except Exception:  # noqa: BLE001, S112 - the user's forward may raise anything
            continue
        return shape
    return None


def _copy(model, memo: dict | None = None):
    try:
        return copy.deepcopy(model, memo)
    except Exception:  # noqa: BLE001 - whatever the user's attributes refuse
        return None


def _real_copy(model):
    """A deep copy of ``model`` with values: of a model built on the meta device, one whose
    weights are freshly initialised on the CPU (each layer's ``reset_parameters``; other
    tensors zero)."""
    if not any(t.is_meta for t in itertools.chain(model.parameters(), model.buffers())):
        return _copy(model)
    twin = _meta_copy(model)
    if twin is None:
        return None
    twin.to_empty(device="cpu")
    for tensor in itertools.chain(twin.parameters(), twin.buffers()):
        tensor.zero_()
    for module in twin.modules():
        if callable(getattr(module, "reset_parameters", None)):
            try:
                module.reset_parameters()
            except Exception:  # noqa: BLE001, S112 - a custom initialiser: zeros will do
                continue
    return twin


def _meta_copy(model):
    """A deep copy of ``model`` whose parameters and buffers are on the meta device: every
    tensor is swapped for its meta twin before ``deepcopy`` reaches it, so no weight is copied."""
    from torch import nn

    memo: dict[int, Any] = {}
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        try:
            twin = tensor.detach().to("meta")
        except Exception:  # noqa: BLE001, S112 - an uninitialised (lazy) parameter
            continue  # copied as it is: it holds no data
        if isinstance(tensor, nn.Parameter):
            twin = nn.Parameter(twin, requires_grad=tensor.requires_grad)
        memo[id(tensor)] = twin
    return _copy(model, memo)
