"""What the models train on: a synthetic task fitted to the model (a fixed random teacher) on
the input ``bnlint.inputs.resolve`` finds, or the user's data; the loss that goes with it."""

from __future__ import annotations

import copy
import math
import traceback
from collections.abc import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from bnlint import inputs
from bnlint.bench.results import CLASSIFICATION, REGRESSION, SYNTHETIC, BenchError, Task

MAX_CLASSES = 10           # synthetic labels use at most this many of the model's outputs
HELDOUT = 256              # held-out samples: never trained on, evaluated in eval mode
HELDOUT_SHARE = 0.2        # of the user's samples, at most HELDOUT
HELDOUT_STREAM = 1_000_003  # added to the seed: the held-out samples' own random stream

Batch = tuple[torch.Tensor, torch.Tensor]


class SyntheticData:
    """A learnable task shaped to fit the model, the same every time for a given seed.

    A sample is smooth random content (drawn at a coarse resolution and upsampled) plus noise.
    Its target comes from a fixed random "teacher": a channel-mixing layer with ReLU applied
    at every coarse position, averaged over positions (so convolutional networks with global
    pooling can learn it as well as flat ones), then a linear layer. Regression targets are the
    teacher's outputs scaled to unit variance; a class label is the index of the largest one.
    """

    HIDDEN = 64
    NOISE = 0.3

    def __init__(self, task: Task, batch_size: int, seed: int):
        self.task = task
        self.batch_size = batch_size
        self.seed = seed
        shape = task.input_shape
        self.coarse = shape if len(shape) < 2 else (shape[0], *(min(d, 4) for d in shape[1:]))
        outputs = task.classes if task.kind == CLASSIFICATION else math.prod(task.output_shape)
        g = torch.Generator().manual_seed(seed)
        self.w1 = torch.randn(self.coarse[0], self.HIDDEN, generator=g) / math.sqrt(self.coarse[0])
        self.w2 = torch.randn(self.HIDDEN, outputs, generator=g)
        self.centre, self.scale = torch.zeros(outputs), torch.ones(())
        sample = self._teacher(torch.randn(4096, *self.coarse, generator=g))
        # centred and scaled: classes come out about equally often, targets have unit variance
        self.centre = sample.mean(0)
        self.scale = (sample - self.centre).std().clamp_min(1e-6)

    def _teacher(self, coarse: torch.Tensor) -> torch.Tensor:
        positions = coarse.flatten(2) if coarse.dim() > 2 else coarse.unsqueeze(2)
        hidden = torch.relu(torch.einsum("ncp,ch->nhp", positions, self.w1)).mean(2)
        return (hidden @ self.w2 - self.centre) / self.scale

    def _upsample(self, coarse: torch.Tensor) -> torch.Tensor:
        spatial = self.task.input_shape[1:]
        if tuple(coarse.shape[1:]) == tuple(self.task.input_shape) or len(spatial) > 3:
            return coarse
        mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(spatial)]
        return F.interpolate(coarse, size=spatial, mode=mode, align_corners=False)

    def _draw(self, n: int, g: torch.Generator) -> Batch:
        coarse = torch.randn(n, *self.coarse, generator=g)
        x = self._upsample(coarse) + self.NOISE * torch.randn(n, *self.task.input_shape,
                                                              generator=g)
        target = self._teacher(coarse)
        if self.task.kind == CLASSIFICATION:
            return x, target.argmax(1)
        return x, target.reshape(n, *self.task.output_shape)

    def batches(self) -> Iterator[Batch]:
        g = torch.Generator().manual_seed(self.seed + 1)
        while True:
            yield self._draw(self.batch_size, g)

    def heldout(self) -> Batch:
        """``HELDOUT`` samples of the same task from a stream of their own: never trained on."""
        return self._draw(HELDOUT, torch.Generator().manual_seed(self.seed + HELDOUT_STREAM))


def _tensors(source) -> bool:
    return isinstance(source, (tuple, list)) and len(source) == 2 and all(
        isinstance(t, torch.Tensor) for t in source)


def split(source, batch_size: int) -> tuple[object, Batch | None]:
    """The user's data as (what to train on, held-out samples): the last ``HELDOUT_SHARE`` of
    a pair of tensors or of a DataLoader's sized dataset (at most ``HELDOUT`` samples) is held
    out; other iterables are trained on whole, with no held-out samples (``None``)."""
    data = torch.utils.data
    if _tensors(source):
        dataset = data.TensorDataset(*source)
        batch, collate = batch_size, None
    elif isinstance(source, data.DataLoader) and not isinstance(source.dataset,
                                                                data.IterableDataset):
        dataset = source.dataset
        batch, collate = source.batch_size or batch_size, source.collate_fn
    else:
        return source, None
    try:
        size = len(dataset)
    except TypeError:
        return source, None
    held = min(HELDOUT, int(size * HELDOUT_SHARE))
    if held < 2 or size - held < batch:
        return source, None
    train = data.DataLoader(data.Subset(dataset, range(size - held)), batch_size=batch,
                            shuffle=True, drop_last=True, collate_fn=collate)
    rest = data.DataLoader(data.Subset(dataset, range(size - held, size)), batch_size=held,
                           collate_fn=collate)
    x, y = next(iter(rest))[:2]
    return train, (x, y)


class UserData:
    """Batches from the user's DataLoader (or tensors), in an order fixed by the seed."""

    def __init__(self, source, batch_size: int, seed: int):
        if _tensors(source):
            source = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*source),
                                                 batch_size=batch_size, shuffle=True,
                                                 drop_last=True)
        if not isinstance(source, Iterable):
            raise BenchError(f"--data gave {type(source).__name__}; it must give a DataLoader "
                             "(or any iterable of (inputs, targets) batches) or a tuple "
                             "(inputs, targets) of tensors")
        self.source = source
        self.seed = seed
        self.held: Batch | None = None

    def heldout(self) -> Batch | None:
        return self.held

    def batches(self) -> Iterator[Batch]:
        epoch = 0
        while True:
            # a shuffling DataLoader draws its order from the global generator: fix it per epoch
            torch.manual_seed(self.seed * 7919 + epoch)
            empty = True
            for batch in self.source:
                if not (isinstance(batch, (tuple, list)) and len(batch) >= 2):
                    raise BenchError("each batch from --data must be (inputs, targets)")
                empty = False
                yield batch[0], batch[1]
            if empty:
                raise BenchError("--data gave no batches")
            epoch += 1


def forward_copy(model: nn.Module, x: torch.Tensor, device, failure: str) -> torch.Tensor:
    """The output of a deep copy of ``model`` in eval mode: the user's model, its running
    statistics and its mode are left alone. ``failure`` begins the message if it raises."""
    probe = copy.deepcopy(model).to(device).eval()
    try:
        with torch.no_grad():
            out = probe(x.to(device))
    except Exception as exc:  # noqa: BLE001 - the user's forward may raise anything
        raise BenchError(f"{failure}: {type(exc).__name__}: {exc}",
                         traceback.format_exc()) from None
    if not isinstance(out, torch.Tensor):
        raise BenchError(f"the model returns {type(out).__name__}; the benchmark needs a model "
                         "that returns one tensor")
    return out


def user_task(source, model: nn.Module, device, label: str) -> Task:
    """Classification when the targets are integers and the model gives one score per class,
    regression otherwise."""
    x, y = next(UserData(source, 1, 0).batches())
    out = forward_copy(model, x[:2], device, f"the model fails on a batch from {label}")
    classify = not (y.is_floating_point() or y.is_complex()) and out.dim() == 2 and out.shape[1] > 1
    return Task(CLASSIFICATION if classify else REGRESSION, tuple(x.shape[1:]),
                tuple(out.shape[1:]), "from the data", label,
                classes=out.shape[1] if classify else None)


def find_input_shape(model: nn.Module, input_shape, device,
                     example=None) -> tuple[tuple[int, ...], str, torch.Tensor]:
    """(input shape, how it was found, the output for a batch of two), by the order of
    ``bnlint.inputs.resolve``."""
    try:
        found = inputs.resolve(model, example, input_shape=input_shape)
    except inputs.ExampleError as exc:
        raise BenchError(str(exc), exc.detail) from None
    if found is None:
        tried = len(dict.fromkeys(inputs.candidate_shapes(model)))
        raise BenchError(f"found no input shape the model accepts (tried {tried} common shapes); "
                         "give one with --input-shape, e.g. --input-shape 3,32,32, or bring data "
                         "with --data module:function")
    shape = found.shape()
    if shape is None:
        raise BenchError(f"the synthetic task feeds the model one tensor, and its input is "
                         f"{found.describe()}; bring data with --data module:function")
    dims = ", ".join(map(str, shape))
    failure = f"the model does not accept inputs of shape (N, {dims}) ({found.origin})"
    return shape, found.origin, forward_copy(model, found.args[0], device, failure)


def synthetic_task(model: nn.Module, input_shape, device, example=None) -> Task:
    shape, origin, out = find_input_shape(model, input_shape, device, example)
    if out.dim() == 2 and out.shape[1] > 1:
        return Task(CLASSIFICATION, shape, tuple(out.shape[1:]), origin, SYNTHETIC,
                    classes=min(out.shape[1], MAX_CLASSES))
    return Task(REGRESSION, shape, tuple(out.shape[1:]), origin, SYNTHETIC)


def loss_function(task: Task) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if task.kind == CLASSIFICATION:
        return lambda out, y: F.cross_entropy(out, y.long())
    return lambda out, y: F.mse_loss(out.reshape(y.shape).float(), y.float())


def task_and_data(model: nn.Module, data, input_shape, example, label: str, device,
                  batch_size: int) -> tuple[Task, Callable[[int], SyntheticData | UserData]]:
    """The task, and a function from a seed to its batches: ``data`` is ``None`` for a
    synthetic task fitted to the model (on ``example`` or the input found for it), else the
    user's data or a function that returns it."""
    if data is None:
        task = synthetic_task(model, input_shape, device, example)
        return task, lambda seed: SyntheticData(task, batch_size, seed)
    if callable(data) and not isinstance(data, Iterable):
        data = data()
    task = user_task(data, model, device, label)
    train, held = split(data, batch_size)

    def source(seed: int) -> UserData:
        user = UserData(train, batch_size, seed)
        user.held = held
        return user
    return task, source


def load_data(spec: str):
    """``--data module:function`` (or ``file.py:function``) -> the function, not yet called."""
    from bnlint.load import load, split_spec

    if split_spec(spec)[1] is None:
        raise BenchError(f"--data {spec}: give module:function, e.g. --data data.py:loaders")
    loaded = load([spec])
    if loaded.results:
        raise BenchError(f"--data {spec}: {loaded.results[0].reason}")
    try:
        return loaded.candidates[0].build()
    except Exception as exc:  # noqa: BLE001 - the user's module may raise anything
        raise BenchError(f"--data {spec}: {type(exc).__name__}: {exc}") from None

