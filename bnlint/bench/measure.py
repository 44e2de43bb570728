"""Measurements on given weights, without training: a model on held-out samples in eval mode,
the original and the fixed model compared output for output, and how much inference in
training mode depends on the batch (what a missing ``.eval()`` costs).

Every forward pass runs on a deep copy: the caller's models, their running statistics and
their modes stay as they were.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from bnlint.bench.results import CLASSIFICATION, Equivalence, Heldout, ModeCheck, Task
from bnlint.bench.tasks import Batch

EVAL_BATCH = 64            # held-out samples per forward pass in eval mode
VERIFY_STEPS = 3           # training-mode batches while the two models' outputs are compared
RTOL, ATOL = 1e-4, 1e-5    # outputs this close count as the same (float rounding)
MODE_SAMPLES = 128         # held-out samples of the mode check
MODE_BATCHES = (8, 32)     # the mode check's other batchings: sizes, each of shuffled samples


def holds_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _forward(model: nn.Module, x: torch.Tensor, size: int, device) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i:i + size].to(device)).float().cpu()
                          for i in range(0, len(x), size)])


def evaluate(model: nn.Module, held: Batch, loss_fn, task: Task, device) -> Heldout:
    """``model`` (trained, not needed afterwards) on held-out samples in eval mode."""
    x, y = held
    model.to(device).eval()
    out = _forward(model, x, EVAL_BATCH, device)
    loss = loss_fn(out, y).item()
    accuracy = None
    if task.kind == CLASSIFICATION:
        accuracy = (out.argmax(1) == y.long()).float().mean().item()
    return Heldout(loss if math.isfinite(loss) else math.inf, accuracy, len(x))


def _close(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(largest absolute difference, the tolerance it is held to)."""
    error = (a.float() - b.float()).abs().max().item() if a.numel() else 0.0
    tolerance = ATOL + RTOL * max(a.float().abs().max().item() if a.numel() else 0.0, 1.0)
    return (error if math.isfinite(error) else math.inf), tolerance


def compare(original: nn.Module, fixed: nn.Module, batches, held: torch.Tensor, *,
            device) -> Equivalence:
    """Copies of both models, with their given weights, run ``VERIFY_STEPS`` batches in
    training mode with their outputs compared at each (each batch moves the running
    statistics), then the held-out inputs in eval mode, on the statistics those batches left.
    No weight is updated: an SGD step amplifies float rounding (a ReLU or a max-pool that
    flips) until an exact fix of a deep network no longer looks exact."""
    models = [copy.deepcopy(m).to(device).train() for m in (original, fixed)]
    worst, tolerance, inputs = 0.0, 0.0, len(held)
    with torch.no_grad():
        for step in range(VERIFY_STEPS):
            x = next(batches)[0].to(device)
            outs = []
            for model in models:
                torch.manual_seed(step)  # dropout draws the same masks in both
                outs.append(model(x))
            error, tol = _close(*outs)
            worst, tolerance, inputs = max(worst, error), max(tolerance, tol), inputs + len(x)
    a, b = (_forward(m.eval(), held, EVAL_BATCH, device) for m in models)
    error, tol = _close(a, b)
    worst, tolerance = max(worst, error), max(tolerance, tol)
    rule = (f"outputs of both models, with their given weights, compared on {inputs} inputs: "
            f"{VERIFY_STEPS} batches in training mode (each moving the running statistics), "
            f"then {len(held)} held-out inputs in eval mode; the same function when no output "
            f"differs by more than {ATOL:g} + {RTOL:g} × the largest output (at least 1)")
    return Equivalence(worst <= tolerance, inputs, worst, tolerance, rule)


def _predictions(out: torch.Tensor, task: Task) -> torch.Tensor:
    return out.argmax(1) if task.kind == CLASSIFICATION else out.flatten(1)


def _changed(reference: torch.Tensor, other: torch.Tensor, task: Task) -> torch.Tensor:
    """Per sample: did its prediction change (another class; for regression, an output that
    moved by more than the float tolerance)."""
    if task.kind == CLASSIFICATION:
        return reference != other
    tolerance = ATOL + RTOL * max(reference.abs().max().item(), 1.0)
    return ((reference - other).abs() > tolerance).any(1)


def _batched(model: nn.Module, x: torch.Tensor, order: torch.Tensor, size: int, device,
             task: Task) -> torch.Tensor:
    """Predictions for ``x`` run in batches of ``size`` samples taken in ``order``, put back
    in the samples' own order."""
    out = _predictions(_forward(model, x[order], size, device), task)
    result = torch.empty_like(out)
    result[order] = out
    return result


def mode_check(model: nn.Module, held: torch.Tensor, task: Task, batch_size: int, device,
               which: str) -> ModeCheck:
    """The share of held-out predictions that change when the same samples run in batches of
    another size and composition: in training mode (each batch normalised by its own
    statistics), then in eval mode (running statistics; must be 0). On a copy of ``model``
    (``which`` says what it is); its running statistics are reset to the copy's before every
    batching, so only the batch differs."""
    x = held[:MODE_SAMPLES]
    n = len(x)
    probe = copy.deepcopy(model).to(device)
    state = copy.deepcopy(probe.state_dict())
    g = torch.Generator().manual_seed(0)
    orders = [torch.randperm(n, generator=g) for _ in MODE_BATCHES]
    shares = []
    for training in (True, False):
        probe.train(training)
        runs = []
        for order, size in zip([torch.arange(n), *orders], [batch_size, *MODE_BATCHES]):
            probe.load_state_dict(state)
            runs.append(_batched(probe, x, order, size, device, task))
        changed = torch.zeros(n, dtype=torch.bool)
        for other in runs[1:]:
            changed |= _changed(runs[0], other, task)
        shares.append(changed.float().mean().item())
    sizes = " and ".join(map(str, MODE_BATCHES))
    rule = (f"{which}, on {n} held-out samples: predictions in batches of "
            f"{batch_size} in order against batches of {sizes} of the same samples shuffled; "
            "the share of samples whose prediction changes ("
            + ("another class" if task.kind == CLASSIFICATION else
               f"an output moving by more than {ATOL:g} + {RTOL:g} × the largest")
            + "), in training mode (batch statistics, as without .eval()) and in eval mode "
            "(running statistics)")
    return ModeCheck(shares[0], shares[1], n, rule)
