"""Model -> fx graphs. ``symbolic_trace`` first; where the user's Python cannot be traced
(data-dependent ``if``, shape arithmetic turned into ints, ...), the failing submodule is kept
as an opaque leaf and analysed on its own, recursively, so everything traceable still is.
Given an example input, what fx could not follow is recorded by running it (``dyntrace``)."""

from __future__ import annotations

import contextlib
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field

from torch import fx, nn
from torch.nn.modules.batchnorm import _BatchNorm

from bnlint import source
from bnlint.graph import ACTIVATION_TYPES, BIASED_LAYER_TYPES
from bnlint.inputs import Example

_ALWAYS_LEAF = (_BatchNorm, *ACTIVATION_TYPES, *BIASED_LAYER_TYPES)


@dataclass
class Unit:
    """One traced piece of a model: ``gm``'s module names are relative to ``prefix``.
    ``dynamic``: recorded by running the forward on an example, so it holds the one path
    through the forward's Python that the example took."""

    prefix: str
    gm: fx.GraphModule
    module: nn.Module
    dynamic: bool = False


@dataclass
class Traced:
    units: list[Unit] = field(default_factory=list)
    # qualified name ("" for the model itself) -> why its own forward could not be traced
    opaque: dict[str, str] = field(default_factory=dict)
    # modules whose forward branches on data: each branch was traced and analysed separately
    branched: list[str] = field(default_factory=list)
    # modules whose forward fx traced in one graph
    followed: list[str] = field(default_factory=list)
    # modules fx could not follow that a run on the example input recorded
    recorded: list[str] = field(default_factory=list)
    # why the example input could not be run through the model, if it could not
    run_error: str | None = None

    def forget_shapes(self) -> None:
        """Drop the shapes recorded on every value (those a probed input gave, say)."""
        for unit in self.units:
            for node in unit.gm.graph.nodes:
                node.meta.pop("tensor_meta", None)

    @property
    def mode(self) -> str:
        if self.opaque:
            return "partial"
        if self.recorded:
            return "dynamic"
        return "branches" if self.branched else "full"

    @property
    def traced_by(self) -> dict[str, list[str]]:
        """How each part was seen: ``fx``, ``branches`` (fx, once down each branch) or
        ``dynamic`` (recorded while running the example) -> the modules it covered."""
        methods = {"fx": self.followed, "branches": self.branched, "dynamic": self.recorded}
        return {method: sorted(set(names)) for method, names in methods.items() if names}


class Tracer(fx.Tracer):
    """Keeps BatchNorm, activations, conv/linear (and their subclasses from other libraries)
    and any module that failed to trace as single call_module nodes."""

    def __init__(self, opaque: set[int] = frozenset(), branch: bool | None = None):
        super().__init__()
        self.opaque = opaque
        self.branch = branch

    def create_node(self, *args, **kwargs) -> fx.Node:
        """Every node gets the user's frames that created it (see ``user_stack``)."""
        node = super().create_node(*args, **kwargs)
        stack = user_stack()
        if stack:
            node.stack_trace = stack
        return node

    def to_bool(self, obj) -> bool:
        """A data-dependent ``if``: normally an error; when tracing branches, take ``branch``."""
        if self.branch is None:
            return super().to_bool(obj)
        return self.branch

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if id(m) in self.opaque or isinstance(m, _ALWAYS_LEAF):
            return True
        return super().is_leaf_module(m, module_qualified_name)


def user_stack() -> str | None:
    """The user's frames in the forward being traced, outermost first, as a traceback writes
    them (``File "path", line N, in name``). This is what fx's ``record_stack_traces`` keeps of
    them, without its cost: it symbolises every frame of every node and imports torch's compiler
    stack to filter them, seconds where tracing a ResNet-50 takes tens of milliseconds."""
    frames = []
    frame = sys._getframe(1)
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    forwards = [i for i, f in enumerate(frames) if f.f_code.co_name == "forward"]
    if not forwards:
        return None
    return "\n".join(
        f'  File "{f.f_code.co_filename}", line {f.f_lineno}, in {f.f_code.co_name}'
        for f in reversed(frames[: forwards[-1] + 1]) if source.is_user_file(f.f_code.co_filename)
    ) or None


@contextlib.contextmanager
def attributes_kept(model: nn.Module) -> Iterator[None]:
    """Undo whatever a forward stores on its modules while it is traced or run (a cache, a
    counter, a proxy, the weight the old ``spectral_norm`` hook computes): every attribute, and
    the entries of every dict attribute (parameters, buffers, submodules, hooks), is put back
    as it was."""
    saved = [(vars(m), dict(vars(m))) for m in model.modules()]
    entries = [(d, dict(d)) for attributes, _ in saved for d in attributes.values()
               if isinstance(d, dict)]
    try:
        yield
    finally:
        for attributes, before in saved:
            for key in set(attributes) - set(before):
                del attributes[key]
            attributes.update(before)
        for d, before in entries:
            if d.keys() != before.keys() or any(d[k] is not v for k, v in before.items()):
                d.clear()
                d.update(before)


def trace_one(module: nn.Module, opaque: set[int] = frozenset(),
              branch: bool | None = None) -> fx.GraphModule:
    tracer = Tracer(opaque, branch)
    with attributes_kept(module):
        graph = tracer.trace(module)
        # built before the module gets its attributes back: the graph module copies the tensor
        # constants fx stored on it (`_tensor_constant0`, ...), which go with them
        return fx.GraphModule(tracer.root, graph, type(module).__name__)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _culprit(exc: BaseException, candidates: dict[int, nn.Module]) -> nn.Module | None:
    """The innermost module of ``candidates`` whose forward was running when tracing failed."""
    found = None
    tb = exc.__traceback__
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        if isinstance(owner, nn.Module) and id(owner) in candidates:
            found = owner
        tb = tb.tb_next
    return found


def describe_error(exc: BaseException) -> str:
    """The exception's last line, as a traceback ends: ``Type: message``."""
    text = traceback.format_exception_only(type(exc), exc)[-1].strip()
    return text.splitlines()[0][:300]


def trace_model(model: nn.Module, example: Example | None = None) -> Traced:
    """Trace ``model`` with fx; with an ``example`` of its forward's arguments, also record
    what fx left opaque by running it, and the shape of every value."""
    result = Traced()
    _visit(model, "", result)
    if example is not None:
        from bnlint import dyntrace

        dyntrace.complete(model, example, result)
    return result


_CONTAINERS = (nn.ModuleList, nn.ModuleDict)


def _trace_branches(module: nn.Module, opaque: set[int]) -> list[fx.GraphModule] | Exception:
    """Both paths of a forward whose ``if`` tests tensor data, or why that fails too."""
    try:
        return [trace_one(module, opaque, branch) for branch in (True, False)]
    except Exception as exc:  # noqa: BLE001
        return exc


def _visit(module: nn.Module, prefix: str, result: Traced) -> None:
    if isinstance(module, _CONTAINERS):
        _visit_children(module, prefix, result)
        return
    names = {id(m): name for name, m in module.named_modules()}
    candidates = {id(m): m for m in module.modules()}
    leaves: dict[int, nn.Module] = {}
    while True:
        try:
            gm = trace_one(module, set(leaves))
        except Exception as exc:  # noqa: BLE001 - any failure of user code while tracing
            culprit = _culprit(exc, candidates)
            if culprit is None or culprit is module or id(culprit) in leaves:
                branches = _trace_branches(module, set(leaves))
                if isinstance(branches, list):
                    result.units += [Unit(prefix, gm, module) for gm in branches]
                    result.branched.append(prefix)
                    break
                inner = _culprit(branches, candidates)  # a submodule fails on one branch
                if inner is not None and inner is not module and id(inner) not in leaves:
                    leaves[id(inner)] = inner
                    continue
                result.opaque[prefix] = describe_error(exc)
                _visit_children(module, prefix, result)
                return
            leaves[id(culprit)] = culprit
            continue
        result.units.append(Unit(prefix, gm, module))
        result.followed.append(prefix)
        break
    for key, leaf in leaves.items():
        _visit(leaf, _join(prefix, names[key]), result)


def _visit_children(module: nn.Module, prefix: str, result: Traced) -> None:
    """Analyse each child that has parts of its own (a lone layer has nothing to check)."""
    for name, child in module.named_children():
        if any(True for _ in child.children()):
            _visit(child, _join(prefix, name), result)
