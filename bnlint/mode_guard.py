"""A runtime guard for BatchNorm's mode, ``bnlint.guard(model)``, and
``bnlint.freeze_batchnorm(module)``, which keeps frozen BatchNorm layers in eval mode.

The guard hooks every BatchNorm layer of the model and reports, as a warning or an error,

* inference in training mode: a BatchNorm layer in training mode runs while autograd is
  disabled (``torch.no_grad()``, ``torch.inference_mode()``), so it normalises with the batch's
  statistics and overwrites its running averages;
* a batch of one: a BatchNorm layer in training mode gets a single sample, so its batch
  statistics come from that one sample (with one value per channel torch raises instead);
* frozen BatchNorm in training mode: a layer whose affine parameters are all frozen
  (``requires_grad=False``) runs in training mode, with autograd on, on an input that needs no
  gradient (nothing before it is trained): it keeps updating its running statistics while its
  weights stay fixed. (A discriminator frozen for a GAN's generator update gets an input that
  needs a gradient, and is not reported.)

Re-estimating the statistics on purpose (a forward pass in training mode under no_grad, as after
weight averaging, or of frozen layers) is done inside ``with g.recalibrating():``, where the
first and last checks are off.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from bnlint.source import is_user_file

ACTIONS = ("warn", "raise")


class BatchNormModeWarning(UserWarning):
    """A BatchNorm layer ran in a mode that is almost certainly a mistake."""


class BatchNormModeError(RuntimeError):
    """Raised instead of the warning by ``guard(model, action="raise")``."""


class Guard:
    """The handle ``guard()`` returns: ``remove()`` it, or use it as a context manager."""

    def __init__(self, model: nn.Module, action: str = "warn"):
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {', '.join(map(repr, ACTIONS))}, "
                             f"not {action!r}")
        if not isinstance(model, nn.Module):
            raise TypeError(f"guard() takes a torch.nn.Module, not {type(model).__name__}")
        self.action = action
        self.model = model
        self.names: dict[nn.Module, str] = {}
        for name, module in model.named_modules():
            if isinstance(module, _BatchNorm):
                self.names.setdefault(module, name or type(module).__name__)
        self._recalibrating = 0
        self._forwards = 0  # depth of the guarded model's own forward calls
        self._reported: set[str] = set()
        self._handles = [m.register_forward_pre_hook(self._check) for m in self.names]
        self._handles += [
            model.register_forward_pre_hook(self._enter),
            model.register_forward_hook(self._leave, always_call=True),
        ]

    @property
    def layers(self) -> list[str]:
        """Qualified names of the BatchNorm layers being watched."""
        return list(self.names.values())

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> Guard:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    @contextmanager
    def recalibrating(self) -> Iterator[Guard]:
        """Re-estimate BatchNorm statistics on purpose: inside this block a layer in training
        mode may run with autograd disabled (batches of one are still reported)."""
        self._recalibrating += 1
        try:
            yield self
        finally:
            self._recalibrating -= 1

    # -- hooks --------------------------------------------------------------------------------

    def _enter(self, _module, _args) -> None:
        if self._forwards == 0:
            self._reported.clear()
        self._forwards += 1

    def _leave(self, _module, _args, _output) -> None:
        self._forwards -= 1

    def _check(self, layer: nn.Module, args: tuple) -> None:
        if not layer.training:
            return
        x = args[0] if args else None
        grad = torch.is_grad_enabled()
        if grad and not self._recalibrating and _frozen(layer, x):
            self._report("frozen", (
                f"BatchNorm layer `{self.names[layer]}` ran in training mode with its affine "
                "parameters frozen (requires_grad=False): it keeps updating its running "
                "statistics from every batch while its weights stay fixed. Keep frozen "
                "BatchNorm layers in eval mode (bnlint.freeze_batchnorm(module) keeps them "
                "there through later .train() calls); to update their statistics on purpose, "
                "run inside `with guard.recalibrating():`."))
        if (not grad and not self._recalibrating
                and layer.running_mean is not None):
            how = "torch.inference_mode()" if torch.is_inference_mode_enabled() \
                else "torch.no_grad()"
            self._report("inference", (
                f"BatchNorm layer `{self.names[layer]}` ran in training mode with autograd "
                f"disabled ({how}): inference in training mode normalises with the batch's "
                "statistics and overwrites the running averages. Call model.eval() before "
                "inference; to re-estimate the statistics on purpose, run inside "
                "`with guard.recalibrating():`."))
        if isinstance(x, torch.Tensor) and x.dim() >= 2 and x.shape[0] == 1:
            shape = list(x.shape)
            if x[0, 0].numel() == 1:
                effect = "with one value per channel there are no batch statistics to compute"
            else:
                effect = ("its batch statistics come from that one sample, so training "
                          "behaves unlike evaluation and the running averages get noisy")
            self._report("batch", (
                f"BatchNorm layer `{self.names[layer]}` got a batch of one sample {shape} in "
                f"training mode: {effect}. Use batches of two or more (DataLoader(..., "
                "drop_last=True) avoids a last batch of one), or call model.eval()."))

    def _report(self, kind: str, message: str) -> None:
        if self._forwards:
            if kind in self._reported:
                return
            self._reported.add(kind)
        if self.action == "raise":
            raise BatchNormModeError(message)
        warnings.warn(message, BatchNormModeWarning, stacklevel=self._caller_level())

    def _caller_level(self) -> int:
        """The stacklevel (seen from ``_report``) of the user's line that ran the guarded
        model, past torch's calls into it; else of the innermost user frame."""
        frames, frame = [], sys._getframe(1)
        while frame is not None:
            frames.append(frame)
            frame = frame.f_back
        start = max((i for i, f in enumerate(frames) if f.f_locals.get("self") is self.model
                     and not is_user_file(f.f_code.co_filename)), default=0)
        for level, frame in enumerate(frames[start:], start + 1):
            if is_user_file(frame.f_code.co_filename):
                return level
        return 1


def _frozen(layer: nn.Module, x) -> bool:
    """Whether a layer keeping running statistics has affine parameters, all frozen, and its
    input needs no gradient."""
    parameters = layer._parameters  # read directly: this runs on every training forward
    weight, bias = parameters.get("weight"), parameters.get("bias")
    return (weight is not None and not weight.requires_grad
            and (bias is None or not bias.requires_grad) and layer.running_mean is not None
            and isinstance(x, torch.Tensor) and not x.requires_grad)


class _KeptInEval:
    """A frozen BatchNorm layer's ``train``: whatever mode is asked for, the layer stays in
    eval mode. (A class, not a closure, so that the layer still copies and pickles.)"""

    def __init__(self, layer: nn.Module):
        self.layer = layer

    def __call__(self, mode: bool = True) -> nn.Module:
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")
        self.layer.training = False
        return self.layer


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Freeze every BatchNorm layer of ``module`` (the module itself, if it is one), in place:
    its affine parameters stop requiring gradients, and it is put in eval mode and kept there
    through later ``.train()`` calls on it or on any module holding it, so that it normalises
    with its running statistics and never updates them. Returns ``module``.

    The other layers are left as they are: freeze their parameters yourself where they should
    not train. Models saved whole (``torch.save(model)``) need bnlint to load again; a
    ``state_dict`` is unchanged."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"freeze_batchnorm() takes a torch.nn.Module, not "
                        f"{type(module).__name__}")
    for layer in module.modules():
        if isinstance(layer, _BatchNorm):
            for parameter in layer.parameters(recurse=False):
                parameter.requires_grad_(False)
            layer.train = _KeptInEval(layer)
            layer.training = False
    return module


def guard(model: nn.Module, action: str = "warn") -> Guard:
    """Watch every BatchNorm layer of ``model`` for inference in training mode, for batches
    of one sample in training mode, and for layers with frozen parameters in training mode
    (see the module's docstring); ``action`` is ``"warn"`` (a ``BatchNormModeWarning``) or
    ``"raise"`` (a ``BatchNormModeError``).

    Returns a handle: call ``.remove()`` to stop, or use it as a context manager::

        with bnlint.guard(model) as g:
            ...
            with g.recalibrating():  # re-estimating BatchNorm statistics on purpose
                update_bn(loader, model)

    Each kind of problem is reported once per forward pass of ``model``.
    """
    return Guard(model, action)
