"""A model -> an eval-mode copy with each BatchNorm folded into the conv or linear layer before
it (``bnlint.fold``, ``--save-folded``), for deployment.

In eval mode BatchNorm is a fixed per-channel affine map, ``y = (x - mean) / sqrt(var + eps) *
weight + bias``, so a layer whose output goes only into it can absorb it: each output channel's
weights are scaled and its bias shifted. A pair is found on the traced graph, like a rule's
finding, and folded one of two ways:

* where the layer is called only into that BatchNorm (every call, everywhere in the model), the
  layer module is replaced by the folded layer and the BatchNorm by ``nn.Identity`` (or by what
  a BatchNorm subclass does after normalising, an activation say): the model keeps its class
  and its forward;
* where the layer is also called elsewhere (``self.bn(self.conv(x)) + self.conv(x)``, one conv
  shared by two branches), the folded layer is a copy that only the BatchNorm's call uses, and
  the traced piece becomes a ``GraphModule``; ``torch.fx.experimental.optimization.fuse``
  folds the shared module itself there and changes the other calls' outputs.

Every folded layer is checked against the layer and BatchNorm it replaces on random inputs, and
the whole model against the original on its example input when there is one; a pair whose
check fails is left unfolded, with the reason.
"""

from __future__ import annotations

import copy
import inspect
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils import parametrize
from torch.utils import _pytree

from bnlint import graph
from bnlint.autofix import CopyError, install
from bnlint.inputs import PROBED, Example, resolve
from bnlint.trace import Unit, trace_model, trace_one

TOLERANCE = 1e-4  # relative error, in float32
LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
          nn.ConvTranspose3d, nn.Linear)


@dataclass(frozen=True)
class Pair:
    """A layer and the BatchNorm after it (qualified names in the model given to ``fold``).
    ``into`` is the folded layer's name in the folded model: the layer's own, or a new name
    where the layer itself stays for its other calls."""

    layer: str
    batchnorm: str
    into: str | None = None


@dataclass(frozen=True)
class Skipped:
    layer: str
    batchnorm: str
    reason: str


@dataclass
class FoldResult:
    """``model`` is the folded eval-mode copy (the model given to ``fold`` is not changed);
    ``checked`` says what the outputs were compared on."""

    model: nn.Module
    folded: list[Pair] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    checked: str = ""


class FoldError(ValueError):
    """The model cannot be folded at all; the message says why, in one line."""


def fold(model: nn.Module, *, example=None) -> FoldResult:
    """An eval-mode copy of ``model`` with every Conv1d/2d/3d, ConvTranspose1d/2d/3d and
    Linear that feeds only a BatchNorm folded into one layer. ``example`` is the forward's
    input (as ``bnlint.check`` takes it); without one, ``example_input()``, ``INPUT_SHAPE`` or
    a probed shape gives it. With an input the whole model is checked, and its shapes (not
    those of a probed one, a guess) tell which Linear feeds BatchNorm1d values of shape
    (batch, features), the only ones it can fold into; without them, a Linear is folded where
    the graph shows its input is 2-D."""
    example = resolve(model, example, probing=True)
    folder = _Folder(model, example, None)
    if folder.reference is None or not folder.plans:
        return folder.result()
    error = folder.error()
    if error <= TOLERANCE:
        return folder.result()
    # Something the graph does not show (a forward that could not be traced calls the layer
    # directly, say): keep each pair that is exact on its own, then check them together.
    exact = {key for key in folder.plans if _Folder(model, example, {key}).error() <= TOLERANCE}
    again = _Folder(model, example, exact)
    error = again.error()
    if error > TOLERANCE:
        raise FoldError(
            f"the pairs that fold exactly one by one change the model's output by {error:.1e} "
            "(relative) when folded together" if exact else
            "the model's output on its example input differs from run to run in eval mode, so "
            "no fold can be checked")
    again.skipped += [Skipped(*folder.names[key], "folding it changes the model's output on its "
                              "example input, though the folded layer matches the pair (a "
                              "forward bnlint cannot see may call the layer)")
                      for key in folder.plans if key not in exact]
    return again.result()


# --- finding pairs -----------------------------------------------------------------------------

@dataclass
class _Plan:
    """How to fold one (layer call, BatchNorm call) pair of one traced piece."""

    unit: Unit
    layer_node: fx.Node
    bn_node: fx.Node
    folded: nn.Module
    rest: nn.Module | None  # what a BatchNorm subclass does after normalising
    swap: bool  # replace the modules themselves, rather than rewriting the graph


class _Folder:
    """Folds a fresh copy of ``model``: every pair, or those in ``only`` (keys of ``plans``)."""

    def __init__(self, model: nn.Module, example: Example | None, only: set | None):
        try:
            self.model = copy.deepcopy(model).eval()
        except Exception as exc:  # noqa: BLE001 - whatever the user's attributes refuse
            raise CopyError(f"fold works on a copy of the model; copy.deepcopy failed: "
                            f"{exc}") from exc
        self.example = example
        self.traced = trace_model(self.model, example)
        if example is not None and example.origin == PROBED:
            # a guess shows how layers connect, not the layout the model is meant for: no
            # Linear pair is folded on its shapes, as no finding is judged by them
            self.traced.forget_shapes()
        self.reference = _run(self.model, example) if example is not None else None
        self.names: dict[tuple, tuple[str, str]] = {}
        self.plans: dict[tuple, _Plan] = {}
        self.skipped: list[Skipped] = []
        self._plan(only)
        self.folded_model, self.folded = self._apply()

    def error(self) -> float:
        """The largest relative difference between the folded and the original outputs."""
        with torch.no_grad():
            out = self.folded_model(*self.example.args, **self.example.kwargs)
        return _difference(out, self.reference)

    def result(self) -> FoldResult:
        checked = ("each folded layer on random inputs" + (
            ", and the model's output on its example input" if self.reference is not None
            else " (no example input ran the whole model)"))
        return FoldResult(self.folded_model, sorted(self.folded, key=lambda p: (p.layer, p.into)),
                          sorted(set(self.skipped), key=lambda s: (s.layer, s.batchnorm, s.reason)),
                          checked)

    def _plan(self, only: set | None) -> None:
        calls: dict[int, list[fx.Node]] = {}  # module -> its calls, in every traced piece
        reads: set[int] = set()  # modules whose parameters a forward reads directly
        for unit in self.traced.units:
            for node in unit.gm.graph.nodes:
                if node.op == "call_module":
                    calls.setdefault(id(unit.gm.get_submodule(node.target)), []).append(node)
                elif node.op == "get_attr" and "." in node.target:
                    reads.add(id(unit.gm.get_submodule(node.target.rpartition(".")[0])))
        for unit in self.traced.units:
            for bn_node in unit.gm.graph.nodes:
                layer_node = graph.tensor_input(bn_node)
                bn = graph.module_of(unit.gm, bn_node)
                layer = graph.module_of(unit.gm, layer_node) if layer_node is not None else None
                if not isinstance(bn, _BatchNorm) or not isinstance(layer, LAYERS):
                    continue
                key = (unit.prefix, layer_node.name, bn_node.name)
                names = (_join(unit.prefix, layer_node.target), _join(unit.prefix, bn_node.target))
                self.names[key] = names
                plan = self._pair(unit, layer_node, bn_node, calls, reads,
                                  only is None or key in only)
                if isinstance(plan, str):
                    self.skipped.append(Skipped(*names, plan))
                elif plan is not None:
                    self.plans[key] = plan

    def _pair(self, unit: Unit, layer_node: fx.Node, bn_node: fx.Node,
              calls: dict[int, list[fx.Node]], reads: set[int],
              wanted: bool) -> _Plan | str | None:
        """How to fold this pair, or why not; ``None`` for a pair that could be folded but is
        not ``wanted``."""
        gm = unit.gm
        layer, bn = gm.get_submodule(layer_node.target), gm.get_submodule(bn_node.target)
        why = _layer_problem(layer) or _batchnorm_problem(bn)
        if why is None and set(layer_node.users) != {bn_node}:
            why = "the layer's output is also used without the BatchNorm"
        if why is None:
            why = _shape_problem(gm, layer_node, layer, bn)
        if why is None and (id(layer) in reads or id(bn) in reads):
            why = "a forward reads the layer's or the BatchNorm's parameters directly"
        if why is None and self._unseen(unit) and self.reference is None:
            why = ("a forward around it could not be traced, and without an example input "
                   "bnlint cannot check the fold")
        rest = _rest(bn) if why is None else None
        if isinstance(rest, str):
            why = rest
        if why is not None or not wanted:
            return why
        eps = rest[1] if rest else bn.eps
        folded = _folded(layer, bn, eps)
        swap = self._married(layer_node, bn_node, calls, layer, bn)
        if not swap and unit.prefix in self.traced.branched:
            return ("the layer is also called without this BatchNorm, and its forward cannot be "
                    "rewritten as one graph (it branches on data)")
        if not swap and unit.dynamic:
            return ("the layer is also called without this BatchNorm, and its forward was "
                    "recorded by running the example, one path through its Python, so a "
                    "rewritten graph cannot replace it")
        rest_module = rest[0] if rest else None
        error = _pair_error(layer, bn, folded, rest_module)
        if error > TOLERANCE:
            return f"the folded layer differs from the pair by {error:.1e} (relative)"
        return _Plan(unit, layer_node, bn_node, folded, rest_module, swap)

    def _unseen(self, unit: Unit) -> bool:
        """Whether some forward that holds this piece was not traced (so may call its layers
        directly), or was recorded along one path only."""
        if unit.dynamic:
            return True
        return any(prefix == "" or unit.prefix.startswith(prefix + ".")
                   for prefix in self.traced.opaque)

    @staticmethod
    def _married(layer_node: fx.Node, bn_node: fx.Node, calls: dict[int, list[fx.Node]],
                 layer: nn.Module, bn: nn.Module) -> bool:
        """Every call of the layer goes only into a call of this BatchNorm, and every call of
        the BatchNorm reads a call of this layer: swapping the modules changes nothing else."""
        layer_calls, bn_calls = calls[id(layer)], calls[id(bn)]
        return all(len(c.users) == 1 and next(iter(c.users)) in bn_calls for c in layer_calls) \
            and all(graph.tensor_input(c) in layer_calls for c in bn_calls)

    # --- applying ------------------------------------------------------------------------------

    def _apply(self) -> tuple[nn.Module, list[Pair]]:
        rewritten: dict[int, Unit] = {}
        swaps: dict[int, nn.Module] = {}
        folded = []
        for key, plan in self.plans.items():
            gm, layer_name, bn_name = plan.unit.gm, *self.names[key]
            if plan.swap:
                swaps[id(gm.get_submodule(plan.layer_node.target))] = plan.folded
                swaps[id(gm.get_submodule(plan.bn_node.target))] = plan.rest or nn.Identity()
                if Pair(layer_name, bn_name, layer_name) not in folded:  # a pair called twice
                    folded.append(Pair(layer_name, bn_name, layer_name))
                continue
            bn_attr = plan.bn_node.target.rpartition(".")[2]
            target = _free_name(gm, f"{plan.layer_node.target}_{bn_attr}")
            gm.add_submodule(target, plan.folded)
            with gm.graph.inserting_before(plan.layer_node):
                out = gm.graph.call_module(target, plan.layer_node.args, plan.layer_node.kwargs)
                if plan.rest is not None:
                    gm.add_submodule(f"{target}_rest", plan.rest)
                    out = gm.graph.call_module(f"{target}_rest", (out,))
            plan.bn_node.replace_all_uses_with(out)
            gm.graph.erase_node(plan.bn_node)
            gm.graph.erase_node(plan.layer_node)
            rewritten[id(plan.unit)] = plan.unit
            folded.append(Pair(layer_name, bn_name, _join(plan.unit.prefix, target)))
        for unit in rewritten.values():
            unit.gm.graph.lint()
            unit.gm.recompile()
        root = install(self.model, list(rewritten.values()))
        root = _replace(root, swaps)
        return root.eval(), folded


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _free_name(gm: fx.GraphModule, name: str) -> str:
    """``name``, or ``name_2``, ``name_3``... where the graph module has it already."""
    candidate, number = name, 1
    while True:
        try:
            gm.get_submodule(candidate)
        except AttributeError:
            return candidate
        number += 1
        candidate = f"{name}_{number}"


def _replace(root: nn.Module, swaps: dict[int, nn.Module]) -> nn.Module:
    """``root`` with every reference to a module in ``swaps`` (by id) replaced, wherever it is
    registered (a module may be held under several names)."""
    if id(root) in swaps:
        return swaps[id(root)]
    for module in list(root.modules()):
        for name, child in list(module._modules.items()):
            if child is not None and id(child) in swaps:
                module._modules[name] = swaps[id(child)]
    return root


# --- what can be folded ------------------------------------------------------------------------

def _hooks(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks)


def _layer_problem(layer: nn.Module) -> str | None:
    own = graph.own_forward(layer)
    if own is not None:
        return f"`{type(layer).__name__}` defines its own `{own}`"
    if parametrize.is_parametrized(layer) or hasattr(layer, "weight_g"):
        return "the layer's weight is computed (weight or spectral norm)"
    if nn.parameter.is_lazy(layer.weight):
        return "the layer is lazy and not initialised yet"
    if _hooks(layer):
        return "the layer has forward hooks"
    return None


def _batchnorm_problem(bn: _BatchNorm) -> str | None:
    if not bn.track_running_stats or bn.running_mean is None:
        return ("the BatchNorm keeps no running statistics: it normalises with each batch's "
                "own, in eval mode too")
    if any(nn.parameter.is_lazy(t) for t in (bn.running_mean, bn.weight) if t is not None):
        return "the BatchNorm is lazy and not initialised yet"
    if _hooks(bn):
        return "the BatchNorm has forward hooks"
    return None


def _shape_problem(gm: fx.GraphModule, layer_node: fx.Node, layer: nn.Module,
                   bn: _BatchNorm) -> str | None:
    """Why the BatchNorm's channels (dim 1 of its input) are not the layer's outputs."""
    shape = graph.shape_of(layer_node)
    if isinstance(layer, nn.Linear):
        if layer.out_features != bn.num_features:
            return (f"the Linear has {layer.out_features} outputs and the BatchNorm "
                    f"{bn.num_features} channels")
        if shape is not None and len(shape) != 2:
            return (f"the Linear's output has shape {shape}, so the BatchNorm normalises dim 1, "
                    "not the Linear's features")
        if shape is None and graph.rank_of(gm, layer_node, {}) != 2:
            return ("bnlint cannot tell that the Linear's input is (batch, features); give an "
                    "example input")
        return None
    if layer.out_channels != bn.num_features:
        return f"the layer has {layer.out_channels} channels and the BatchNorm {bn.num_features}"
    if shape is not None and len(shape) != len(layer.kernel_size) + 2:
        return f"the layer's output has shape {shape}, without a batch dimension"
    return None


def _rest(bn: _BatchNorm) -> tuple[fx.GraphModule, float] | str | None:
    """What a BatchNorm subclass's own forward does after normalising (an activation, say),
    as a module applied to the folded layer's output, and the eps its normalisation uses;
    ``None`` for torch's own BatchNorms; or why it cannot be told apart."""
    if type(bn).forward.__module__ == _BatchNorm.__module__:
        return None
    name = type(bn).__name__
    twin = copy.deepcopy(bn).eval()
    twin._check_input_dim = lambda _: None  # fx cannot trace the dimension check
    try:
        traced = fx.Tracer().trace(twin)
    except Exception as exc:  # noqa: BLE001 - whatever the user's forward does to a Proxy
        return f"`{name}` defines its own forward, which bnlint cannot trace ({type(exc).__name__})"
    norms = [n for n in traced.nodes if n.op == "call_function" and n.target is F.batch_norm]
    inputs = [n for n in traced.nodes if n.op == "placeholder"]
    unclear = f"`{name}` defines its own forward, and bnlint cannot tell its normalisation apart"
    if len(norms) != 1 or len(inputs) != 1 or set(inputs[0].users) != set(norms):
        return unclear
    norm, = norms
    arguments = inspect.signature(F.batch_norm).bind(*norm.args, **norm.kwargs).arguments
    own = {"running_mean": "running_mean", "running_var": "running_var", "weight": "weight",
           "bias": "bias"}
    for argument, attribute in own.items():
        value = arguments.get(argument)
        if getattr(twin, attribute) is None and value is None:
            continue
        if not (isinstance(value, fx.Node) and value.op == "get_attr"
                and value.target == attribute):
            return unclear
    eps = arguments.get("eps", 1e-5)
    if arguments.get("training", False) is not False or not isinstance(eps, (int, float)):
        return unclear
    norm.replace_all_uses_with(inputs[0])
    traced.erase_node(norm)
    rest = fx.GraphModule(twin, traced, f"Folded{name}")
    rest.graph.eliminate_dead_code()
    if any(n.op == "get_attr" and n.target in own.values() for n in rest.graph.nodes):
        return unclear
    rest.recompile()
    return rest, float(eps)


# --- the arithmetic ----------------------------------------------------------------------------

def _folded(layer: nn.Module, bn: _BatchNorm, eps: float) -> nn.Module:
    """A copy of ``layer`` whose output is the BatchNorm's in eval mode. Computed in float64
    (where the device has it) and stored in the layer's dtype."""
    weight = layer.weight.detach()
    work = torch.float64 if weight.device.type in ("cpu", "cuda") else torch.float32
    mean, var = bn.running_mean.to(work), bn.running_var.to(work)
    scale = torch.rsqrt(var + eps)
    if bn.weight is not None:
        scale = scale * bn.weight.detach().to(work)
    shift = -mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias.detach().to(work)
    w = weight.to(work)
    if isinstance(layer, nn.modules.conv._ConvTransposeNd):
        # (in, out / groups, *kernel): the output channel is the group's block of dim 1
        groups = layer.groups
        grouped = w.reshape(groups, w.shape[0] // groups, w.shape[1], *w.shape[2:])
        factor = scale.reshape(groups, 1, w.shape[1], *[1] * (w.dim() - 2))
        w = (grouped * factor).reshape(w.shape)
    else:
        w = w * scale.reshape(-1, *[1] * (w.dim() - 1))
    bias = shift if layer.bias is None else layer.bias.detach().to(work) * scale + shift
    folded = copy.deepcopy(layer)
    folded.weight = nn.Parameter(w.to(weight.dtype), requires_grad=layer.weight.requires_grad)
    folded.bias = nn.Parameter(bias.to(weight.dtype), requires_grad=layer.weight.requires_grad)
    return folded


def _pair_error(layer: nn.Module, bn: _BatchNorm, folded: nn.Module,
                rest: nn.Module | None) -> float:
    """The relative difference between ``folded`` (then ``rest``) and layer then BatchNorm,
    in eval mode, on random float32 inputs."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(_input_shape(layer), generator=generator)
    pair = nn.Sequential(layer, bn)  # a subclass's forward applies ``rest`` itself
    single = nn.Sequential(folded, *([rest] if rest is not None else []))
    with torch.no_grad():
        pair, single = copy.deepcopy(pair).float().eval(), copy.deepcopy(single).float().eval()
        device = next(pair.parameters()).device
        return _difference(single(x.to(device)), pair(x.to(device)))


def _input_shape(layer: nn.Module) -> tuple[int, ...]:
    """A small input the layer accepts: a batch of two, each as small as the kernel allows
    plus a stride."""
    if isinstance(layer, nn.Linear):
        return (4, layer.in_features)
    if layer.transposed:
        return (2, layer.in_channels, *[3] * len(layer.kernel_size))
    padding = layer.padding if isinstance(layer.padding, tuple) else (0,) * len(layer.kernel_size)
    spatial = [max(d * (k - 1) + 1 - 2 * p, 1) + s for k, d, p, s in zip(
        layer.kernel_size, layer.dilation, padding, layer.stride)]
    return (2, layer.in_channels, *spatial)


def _difference(out, reference) -> float:
    """Largest relative difference between two outputs (tensors, or structures of them)."""
    worst = 0.0
    ours, theirs = _pytree.tree_leaves(out), _pytree.tree_leaves(reference)
    if len(ours) != len(theirs):
        return math.inf
    for a, b in zip(ours, theirs):
        if not isinstance(b, torch.Tensor):
            worst = max(worst, 0.0 if a == b else math.inf)
            continue
        if not b.is_floating_point():
            worst = max(worst, 0.0 if torch.equal(a, b) else math.inf)
            continue
        scale = b.abs().max().item() if b.numel() else 0.0
        if b.numel():
            worst = max(worst, (a - b).abs().max().item() / max(scale, 1e-12))
    return worst


# --- the example input ------------------------------------------------------------------------

def _run(model: nn.Module, example: Example):
    """The model's output on the example, or ``None`` if its forward refuses it."""
    try:
        with torch.no_grad():
            return model(*example.args, **example.kwargs)
    except Exception:  # noqa: BLE001 - an input the forward refuses: no whole-model check
        return None


# --- --save-folded -----------------------------------------------------------------------------

def save(spec: str, model: nn.Module, folder: Path, example=None, input_shape=None) -> str:
    """``--save-folded``: fold ``model`` and write it (code and weights, as ``--save-fixed``
    writes a fixed model) to ``folder``, without the identities that stand where BatchNorms
    were; one line saying what was done. ``example`` and ``input_shape`` as the command line
    gives them (``bnlint.inputs.resolve``)."""
    from bnlint.export import ExportError, write_model
    from bnlint.inputs import ExampleError

    try:
        result = fold(model, example=resolve(model, example, input_shape=input_shape,
                                             probing=True))
        write_model(_without_identities(result.model), folder, name="FoldedModel",
                    title=f"{spec}, folded by bnlint",
                    fixes=[f"fold {p.layer} + {p.batchnorm}" for p in result.folded])
    except (ExampleError, FoldError, CopyError, ExportError) as exc:
        return f"{spec}: folded model not saved: {exc}"
    done = f"{len(result.folded)} pair{'s' * (len(result.folded) != 1)} folded"
    if result.skipped:
        done += f"; {len(result.skipped)} left as they are: " + "; ".join(
            f"{s.layer} + {s.batchnorm}, {s.reason}" for s in result.skipped)
    return f"{spec}: folded model saved to {folder} ({done})"


def _without_identities(model: nn.Module) -> nn.Module:
    """The model as one graph with no ``nn.Identity`` calls, where it traces as one; else the
    model itself (the export says why it cannot be written)."""
    try:
        gm = trace_one(model)
    except Exception:  # noqa: BLE001 - whatever stops tracing the user's forward
        return model
    for node in list(gm.graph.nodes):
        if isinstance(graph.module_of(gm, node), nn.Identity) and len(node.args) == 1:
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm.eval()
