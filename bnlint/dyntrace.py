"""Run-time dataflow tracing, for the forwards torch.fx cannot follow, and shapes for every value.

fx traces a forward symbolically and stops at Python that needs values: a shape ``assert``,
index arithmetic, a loop over a list argument. Given an example of the model's forward
arguments, ``complete`` runs the model once and records, for every tensor, the operation that
produced it: module forward hooks see the layers fx keeps whole (the same leaves), a
``TorchFunctionMode`` sees every torch function and Tensor method in between. The record is an
``fx.GraphModule`` in fx's own vocabulary (call_module, call_function, call_method, get_attr,
placeholder, output), so the graph rules read it unchanged, and every value in it carries its
shape (``node.meta["tensor_meta"]``). fx graphs get their shapes by running them.

Nothing of the user's model changes: ``torch.func.functional_call`` runs it with stand-ins for
its parameters and buffers. They are fake tensors (meta ones where this torch has none bnlint
knows), which cost no memory and compute nothing; only where those cannot run the code (values
decide a shape or the control flow) is it run on small real tensors, with copies of the state.
A record is one path through the forward's Python: the one the example took.
"""

from __future__ import annotations

import contextlib
import copy
import dis
import inspect
import operator
import re
import sys
import types
from collections.abc import Callable, Container, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import _extract_tensor_metadata
from torch.nn.modules.module import (
    register_module_forward_hook,
    register_module_forward_pre_hook,
)
from torch.overrides import TorchFunctionMode

from bnlint import source, trace
from bnlint.inputs import Example

# FakeTensorMode lives in a private module: it is used on the torch versions it was written
# against, and the public meta device stands in for it elsewhere.
FAKE_SINCE = (2, 1)
# how deep the tensors inside a forward's arguments are looked for (lists, dicts, attributes)
_MAX_DEPTH = 6
# a parameter or buffer of a model built without weights with at least this many elements is
# run on zeros that cost no memory (``_read_only_zeros``); smaller ones on random values
_LARGE = 2**16
# constants fx can print in generated code; other objects are kept as their repr
_PLAIN = (bool, int, float, complex, str, torch.dtype, torch.device, torch.memory_format,
          torch.layout)


def _torch_version() -> tuple[int, int]:
    major, minor = re.match(r"(\d+)\.(\d+)", torch.__version__).groups()
    return int(major), int(minor)


def _fake_mode():
    """A FakeTensorMode, or ``None`` where this torch has none bnlint knows."""
    if _torch_version() < FAKE_SINCE:
        return None
    try:
        from torch._subclasses.fake_tensor import FakeTensorMode

        return FakeTensorMode(allow_non_fake_inputs=True)
    except Exception:  # noqa: BLE001 - a changed private API: use the meta device
        return None


# --- walking the values a forward takes and returns ----------------------------------------------

def _walk(value: Any, visit: Callable[[str, torch.Tensor], torch.Tensor], path: str = "",
          depth: int = 0) -> Any:
    """``value`` with every tensor inside it (in lists, tuples, dicts and the attributes of
    plain objects such as a batch class) replaced by ``visit(path, tensor)``; containers and
    objects are copied only where something inside changed."""
    if isinstance(value, torch.Tensor):
        return visit(path, value)
    if depth >= _MAX_DEPTH:
        return value
    if isinstance(value, (list, tuple)):
        items = [_walk(v, visit, f"{path}_{i}", depth + 1) for i, v in enumerate(value)]
        if all(a is b for a, b in zip(items, value)):
            return value
        if isinstance(value, list):
            return items
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    if isinstance(value, dict):
        items = {k: _walk(v, visit, f"{path}_{k}", depth + 1) for k, v in value.items()}
        return value if all(items[k] is v for k, v in value.items()) else _replaced(value, items)
    attributes = getattr(value, "__dict__", None)
    if not isinstance(attributes, dict) or isinstance(value, (
            nn.Module, type, types.ModuleType, types.FunctionType, types.MethodType)):
        return value
    items = {k: _walk(v, visit, f"{path}_{k}", depth + 1) for k, v in attributes.items()}
    if all(items[k] is v for k, v in attributes.items()):
        return value
    return _replaced(value, items)


def _replaced(value: Any, items: dict) -> Any:
    """A shallow copy of a dict or object with ``items`` as its entries or attributes (the
    original if it cannot be copied: fake tensors then convert its tensors when they are used)."""
    try:
        new = copy.copy(value)
        (new if isinstance(new, dict) else vars(new)).update(items)
    except Exception:  # noqa: BLE001 - whatever a user class does on copy
        return value
    return new


def _tensors(value: Any) -> list[tuple[str, torch.Tensor]]:
    found: list[tuple[str, torch.Tensor]] = []
    _walk(value, lambda path, t: found.append((path, t)) or t)
    return found


# --- running a module on stand-ins ---------------------------------------------------------------

class CannotRun(Exception):
    """The module cannot be run for a reason bnlint knows, stated in the message."""


class _Runner:
    """Runs a module with stand-ins for its state and inputs. ``kind``: ``fake`` (FakeTensor:
    no memory, no computation, and real CPU tensors made on the side are taken in), ``meta``
    (the meta device, where this torch has no FakeTensor bnlint knows) or ``real`` (small CPU
    tensors and copies of the state, for code that needs values)."""

    def __init__(self, kind: str, fake_mode=None):
        self.kind = kind
        self.fake_mode = fake_mode

    def tensor(self, t: torch.Tensor, weight: bool = False) -> torch.Tensor:
        """A stand-in for ``t``; ``weight``: a parameter or buffer, not an input."""
        is_fake = type(t).__name__ == "FakeTensor"
        if self.kind == "fake":
            if is_fake and t.fake_mode is self.fake_mode:
                return t
            with self.fake_mode:
                return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype,
                                           device="cpu" if t.is_meta else t.device)
        if self.kind == "meta":
            return t.detach().to("meta")
        if is_fake or (t.is_meta and not weight):
            raise CannotRun("a value recorded without data cannot be run on real tensors")
        if t.is_meta:  # a model built without weights: any values will do to follow its code
            return (torch.rand(t.shape, dtype=t.dtype) if t.is_floating_point()
                    else torch.zeros(t.shape, dtype=t.dtype))
        return t.detach().clone()

    def state(self, module: nn.Module) -> dict[str, torch.Tensor]:
        """Stand-ins for every parameter and buffer, by name; a tensor under two names (tied
        weights) gets one stand-in."""
        named = [*module.named_parameters(remove_duplicate=False),
                 *module.named_buffers(remove_duplicate=False)]
        if any(nn.parameter.is_lazy(t) for _, t in named):
            raise CannotRun("it has lazy layers that are not initialised yet")
        distinct = {id(t): t for _, t in named}
        made = _read_only_zeros(distinct) if self.kind == "real" else {}
        for key, t in distinct.items():
            if key not in made:
                made[key] = self.tensor(t, weight=True)
        return {name: made[id(t)] for name, t in named}

    def inputs(self, value: Any) -> Any:
        return _walk(value, lambda _, t: self.tensor(t))

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """No gradients, the caller's random state kept, and factories making stand-ins."""
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.no_grad())
            stack.enter_context(torch.random.fork_rng(devices=[]))
            if self.kind == "fake":
                stack.enter_context(self.fake_mode)
            elif self.kind == "meta":
                stack.enter_context(torch.device("meta"))
            yield


def _read_only_zeros(tensors: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
    """Zeros for the large tensors of a model built without weights (by ``id``), as disjoint
    views of one block that is allocated and never written: the system maps pages that are only
    read to its one page of zeros, so a run on real tensors that reads a billion weights holds
    none of them in memory. Small tensors are left to ``_Runner.tensor`` (random values)."""
    large = {key: t for key, t in tensors.items()
             if t.is_meta and t.numel() >= _LARGE and not t.is_complex()}
    if not large:
        return {}
    spans = {key: -(-t.numel() * t.element_size() // 64) * 64 for key, t in large.items()}
    block = torch.empty(sum(spans.values()), dtype=torch.uint8)
    if block.any():  # an allocator that hands out used memory: then the zeros are written
        block.zero_()
    made, start = {}, 0
    for key, t in large.items():
        size = t.numel() * t.element_size()
        with contextlib.suppress(RuntimeError):  # a dtype bytes cannot be viewed as
            made[key] = block[start:start + size].view(t.dtype).view(t.shape)
        start += spans[key]
    return made


def _call(runner: _Runner, module: nn.Module, args: tuple, kwargs: dict,
          state: dict[str, torch.Tensor], during=contextlib.nullcontext) -> Any:
    with runner.running(), trace.attributes_kept(module), during():
        return torch.func.functional_call(module, state, tuple(args), kwargs)


# --- recording a forward -------------------------------------------------------------------------

def _meta(value: Any):
    """What ShapeProp records of a value: a TensorMetadata, the same structure of them for a
    tuple, list or dict of tensors, else ``None``."""
    if isinstance(value, (list, tuple)):
        return tuple(_meta(v) for v in value)
    if isinstance(value, dict):
        return {k: _meta(v) for k, v in value.items()}
    if not isinstance(value, torch.Tensor):
        return None
    try:
        return _extract_tensor_metadata(value)
    except Exception:  # noqa: BLE001 - a tensor subclass without the usual metadata
        return None


def _holds_tensor(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, (list, tuple)):
        return any(_holds_tensor(v) for v in value)
    return isinstance(value, dict) and any(_holds_tensor(v) for v in value.values())


def _operator(name: str) -> tuple[Callable, bool] | None:
    """The ``operator`` function fx records for the Tensor dunder ``__name__``, and whether its
    operands are swapped (``__rsub__``: ``b - a``)."""
    for core, swapped in ((name, False), (name[1:], True)):
        for candidate in (core, core + "_"):
            if candidate and hasattr(operator, candidate):
                return getattr(operator, candidate), swapped
        if not name.startswith("r"):
            break
    return None


def _mutates(func: Callable, kwargs: dict) -> bool:
    """An op that changes its first argument in place (``add_``, ``x[i] = v``, ``+=``,
    ``inplace=True``)."""
    name = getattr(func, "__name__", "")
    if name.startswith("__") and name.endswith("__"):
        core = name[2:-2]
        return core == "setitem" or (core.startswith("i") and _operator(core[1:]) is not None
                                     and hasattr(operator, core))
    return name.endswith("_") or kwargs.get("inplace") is True


def _vocabulary(func: Callable, args: tuple) -> tuple[str, Any, tuple]:
    """(op, target, args) of the fx node that records ``func(*args)``, as fx would write it."""
    name = getattr(func, "__name__", "")
    if name == "__get__":  # a Tensor property: x.T, x.mT, x.data
        owner = getattr(func, "__self__", None)
        attribute = getattr(owner, "__name__", None) or getattr(
            getattr(owner, "fget", None), "__name__", None)
        if attribute:
            return "call_function", getattr, (args[0], attribute)
    if getattr(func, "__qualname__", "").split(".")[0] in ("Tensor", "TensorBase"):
        if name.startswith("__") and name.endswith("__"):
            found = _operator(name[2:-2])
            if found is not None:
                target, swapped = found
                return "call_function", target, ((args[1], args[0], *args[2:]) if swapped
                                                 else args)
        if name in _OPERATOR_METHODS and _written_as_operator():
            return "call_function", _OPERATOR_METHODS[name], args
        return "call_method", name, args
    return "call_function", func, args


# Tensor methods that Python operators run, and the ``operator`` function fx records for them
# (``x + y`` is ``operator.add``, ``x += y`` is ``operator.iadd``; ``x.add(y)`` stays a method)
_OPERATOR_METHODS = {
    "add": operator.add, "sub": operator.sub, "mul": operator.mul, "div": operator.truediv,
    "remainder": operator.mod, "pow": operator.pow, "matmul": operator.matmul,
    "eq": operator.eq, "ne": operator.ne, "lt": operator.lt, "le": operator.le,
    "gt": operator.gt, "ge": operator.ge, "neg": operator.neg, "positive": operator.pos,
    "add_": operator.iadd, "sub_": operator.isub, "mul_": operator.imul,
    "div_": operator.itruediv, "floor_divide_": operator.ifloordiv, "remainder_": operator.imod,
    "pow_": operator.ipow,
}
_OPERATOR_OPCODES = ("BINARY_", "INPLACE_", "COMPARE_OP", "UNARY_")


def _written_as_operator() -> bool:
    """Whether the user's line runs the current Tensor method with an operator (``x + y``)
    rather than a call (``x.add(y)``): the instruction its frame is executing says."""
    frame = sys._getframe(1)
    while frame is not None and not source.is_user_file(frame.f_code.co_filename):
        frame = frame.f_back
    if frame is None or not 0 <= frame.f_lasti < len(frame.f_code.co_code):
        return False
    return dis.opname[frame.f_code.co_code[frame.f_lasti]].startswith(_OPERATOR_OPCODES)


def _identifier(path: str) -> str:
    name = re.sub(r"\W", "_", path)
    return name if name and not name[0].isdigit() else f"_{name}"


class _Recorder(TorchFunctionMode):
    """Builds the graph of one call of ``root`` while it runs.

    ``where`` maps each tensor seen (by id; ``alive`` keeps them alive so ids stay unique) to
    the node that produced it, or to (node, path) for a tensor inside a tuple, list or dict
    result, which becomes ``getitem`` nodes when something uses it."""

    def __init__(self, root: nn.Module, state: dict[str, torch.Tensor], kept: set[int],
                 wanted: Container[str]):
        super().__init__()
        self.root = root
        self.graph = fx.Graph()
        self.names: dict[int, str] = {}
        for name, module in root.named_modules(remove_duplicate=False):
            self.names.setdefault(id(module), name)
        self.attributes: dict[int, str] = {}
        for name, t in state.items():
            self.attributes.setdefault(id(t), name)
        self.leaves = trace.Tracer(kept)
        self.where: dict[int, fx.Node | tuple[fx.Node, tuple]] = {}
        self.items: dict[tuple[fx.Node, tuple], fx.Node] = {}
        self.alive: list[Any] = []
        self.stack: list[nn.Module] = []
        self.leaf_at: int | None = None  # the stack position of the leaf module running now
        self.active = False
        self.constants = 0
        self.wanted = wanted
        self.captured: dict[str, tuple[tuple, dict]] = {}  # module name -> its first call's inputs
        self.inlined: set[str] = set()  # modules whose forward was recorded op by op

    # nodes for values

    def _bind(self, value: Any, node: fx.Node, path: tuple = ()) -> None:
        if not path:
            node.meta["tensor_meta"] = _meta(value)
        if isinstance(value, torch.Tensor):
            self.alive.append(value)
            self.where[id(value)] = (node, path) if path else node
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                self._bind(item, node, (*path, i))
        elif isinstance(value, dict):
            for key, item in value.items():
                self._bind(item, node, (*path, key))

    def _node(self, t: torch.Tensor) -> fx.Node:
        found = self.where.get(id(t))
        if isinstance(found, fx.Node):
            return found
        if found is None:
            name = self.attributes.get(id(t))
            node = self.graph.get_attr(name) if name is not None else self._constant()
        else:
            base, path = found
            node = base
            for depth in range(1, len(path) + 1):
                key = (base, path[:depth])
                if key not in self.items:
                    self.items[key] = self.graph.call_function(operator.getitem,
                                                               (node, path[depth - 1]))
                    self.items[key].stack_trace = base.stack_trace
                node = self.items[key]
        self._bind(t, node)
        return node

    def _constant(self) -> fx.Node:
        """A tensor from outside the forward (a plain tensor attribute, a global): an input."""
        placeholders = [n for n in self.graph.nodes if n.op == "placeholder"]
        place = (self.graph.inserting_after(placeholders[-1]) if placeholders
                 else self.graph.inserting_before(None))
        with place:
            node = self.graph.placeholder(f"_tensor_constant{self.constants}")
        self.constants += 1
        return node

    def _arg(self, value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return self._node(value)
        if isinstance(value, list):
            return [self._arg(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self._arg(v) for v in value)
        if isinstance(value, dict):
            return {k: self._arg(v) for k, v in value.items()}
        if isinstance(value, slice):
            return slice(self._arg(value.start), self._arg(value.stop), self._arg(value.step))
        if value is None or value is Ellipsis or isinstance(value, _PLAIN):
            return value
        return repr(value)

    # the forward's inputs and output

    def inputs(self, args: tuple, kwargs: dict) -> None:
        try:
            bound = inspect.signature(self.root.forward).bind(*args, **kwargs).arguments
        except (TypeError, ValueError):
            bound = {**{f"arg{i}": a for i, a in enumerate(args)}, **kwargs}
        for name, value in bound.items():
            for path, t in _tensors(value):
                if id(t) not in self.where:
                    self._bind(t, self.graph.placeholder(_identifier(name + path)))

    def finish(self, output: Any) -> fx.GraphModule:
        nodes = [self._node(t) for _, t in _tensors(output)]
        self.graph.output(nodes[0] if len(nodes) == 1 else tuple(nodes) or None)
        for node in list(reversed(self.graph.nodes)):
            if node.op in ("call_function", "call_method", "get_attr") and not node.users and (
                    not node.meta.get("mutates")):
                self.graph.erase_node(node)
        return fx.GraphModule(self.root, self.graph, type(self.root).__name__)

    # what runs

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.active and self.leaf_at is None:
            self.active = False
            try:
                self._record(func, args, kwargs, out)
            finally:
                self.active = True
        return out

    def _record(self, func: Callable, args: tuple, kwargs: dict, out: Any) -> None:
        mutates = _mutates(func, kwargs)
        if out is None and mutates and args and isinstance(args[0], torch.Tensor):
            out = args[0]  # x[i] = v: later uses of x read the result
        if not _holds_tensor(out):
            return
        given = [t for _, t in _tensors((args, kwargs))]
        if not mutates and any(out is t for t in given):
            return  # an op that gave back its input unchanged (.contiguous(), .to(same))
        op, target, args = _vocabulary(func, args)
        node = self.graph.create_node(op, target, self._arg(args), self._arg(kwargs))
        node.stack_trace = trace.user_stack()
        if mutates:
            node.meta["mutates"] = True
        self._bind(out, node)

    def _before(self, module: nn.Module, args) -> None:
        if module is self.root and not self.stack:
            self.active = True
        self.stack.append(module)
        name = self.names.get(id(module))
        if not self.active or self.leaf_at is not None or name is None:
            return
        if module is not self.root and self.leaves.is_leaf_module(module, name):
            self.leaf_at = len(self.stack) - 1
        else:
            self.inlined.add(name)

    def _after(self, module: nn.Module, args, kwargs, out) -> None:
        at = next((i for i in range(len(self.stack) - 1, -1, -1) if self.stack[i] is module), None)
        if at is None:
            return
        del self.stack[at:]
        name = self.names.get(id(module))
        if name in self.wanted and name not in self.captured:
            self.captured[name] = (args, kwargs)
        if self.leaf_at == at:
            self.leaf_at = None
            self.active = False
            node = self.graph.call_module(name, self._arg(args), self._arg(kwargs))
            node.stack_trace = trace.user_stack()
            self._bind(out, node)
            self.active = True
        elif self.leaf_at is not None and self.leaf_at > at:
            self.leaf_at = None
        if module is self.root and not self.stack:
            self.active = False

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        before = register_module_forward_pre_hook(self._before)
        after = register_module_forward_hook(self._after, with_kwargs=True)
        try:
            with self:
                yield
        finally:
            before.remove()
            after.remove()


@dataclass
class Record:
    """One recorded call: its graph, the modules whose forward it recorded op by op
    (``inlined``), and the inputs of the first call of each ``wanted`` module (``captured``);
    names relative to the recorded module."""

    gm: fx.GraphModule
    inlined: set[str]
    captured: dict[str, tuple[tuple, dict]]
    kind: str


def record(module: nn.Module, args: tuple, kwargs: dict, runner: _Runner,
           kept: set[int] = frozenset(), wanted: Container[str] = ()) -> Record:
    """Run ``module(*args, **kwargs)`` once on ``runner``'s stand-ins and record its graph.
    ``kept``: ids of submodules to keep as single calls besides the layers fx keeps whole."""
    state = runner.state(module)
    args, kwargs = runner.inputs(tuple(args)), runner.inputs(dict(kwargs))
    recorder = _Recorder(module, state, kept, wanted)
    recorder.inputs(args, kwargs)
    out = _call(runner, module, args, kwargs, state, recorder.recording)
    return Record(recorder.finish(out), recorder.inlined, recorder.captured, runner.kind)


# --- shapes of an fx graph -----------------------------------------------------------------------

class _Shapes(fx.Interpreter):
    def run_node(self, node: fx.Node) -> Any:
        value = super().run_node(node)
        if _holds_tensor(value):
            node.meta["tensor_meta"] = _meta(value)
        return value


class _Interpret(nn.Module):
    """Runs ``gm`` node by node, so ``functional_call`` can give it stand-in state."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__()
        self.gm = gm

    def forward(self, *values):
        return _Shapes(self.gm).run(*values)


def _positional(gm: fx.GraphModule, module: nn.Module, args: tuple, kwargs: dict) -> list:
    """The values of ``gm``'s placeholders for the call ``module(*args, **kwargs)``."""
    bound = inspect.signature(module.forward).bind(*args, **kwargs)
    bound.apply_defaults()
    values: list = []
    for node in gm.graph.find_nodes(op="placeholder"):
        value = bound.arguments[node.target.lstrip("*")]
        if node.target.startswith("**"):
            raise CannotRun("a **kwargs forward")
        if node.target.startswith("*"):
            values.extend(value)
        else:
            values.append(value)
    return values


def propagate_shapes(unit: trace.Unit, args: tuple, kwargs: dict,
                     runners: list[_Runner]) -> Exception | None:
    """Record the shape of every value of an fx-traced ``unit`` called with these inputs;
    the error if no runner could run it (its shapes then stay unknown)."""
    wrapper = _Interpret(unit.gm)

    def run(runner: _Runner) -> None:
        values = runner.inputs(_positional(unit.gm, unit.module, args, kwargs))
        _call(runner, wrapper, values, {}, runner.state(wrapper))

    try:
        _attempt(runners, run)
    except Exception as exc:  # noqa: BLE001 - reported by the caller where it matters
        return exc
    return None


# --- filling in what fx left opaque --------------------------------------------------------------

def _under(name: str, prefix: str) -> bool:
    return not prefix or name == prefix or name.startswith(prefix + ".")


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix and name else prefix or name


def _runners() -> list[_Runner]:
    fake = _fake_mode()
    return [_Runner("fake", fake) if fake is not None else _Runner("meta"), _Runner("real")]


def _attempt(runners: list[_Runner], run: Callable[[_Runner], Any]) -> Any:
    """``run(runner)`` on the first runner it succeeds with; else the last error."""
    error: Exception | None = None
    for runner in runners:
        try:
            return run(runner)
        except Exception as exc:  # noqa: BLE001 - user code on stand-ins: try the next kind
            error = exc
    raise error


class _Session:
    """The runs ``complete`` makes on one model and example, each on fake (or meta) tensors
    if it can, on real ones only where those fail. Runs of the whole model keep the modules in
    ``kept`` as single calls, and capture the inputs of those ``wanted``."""

    def __init__(self, model: nn.Module, example: Example, wanted: set[str], kept: set[int]):
        self.model = model
        self.example = example
        self.wanted = wanted
        self.kept = kept
        self.runners = _runners()
        self.whole: dict[bool, Record | Exception] = {}  # on real tensors? -> run or error

    def model_run(self, real: bool = False) -> Record:
        """The whole model recorded on the example (on real tensors, if ``real``)."""
        if real and isinstance(self.whole.get(False), Record) and self.whole[False].kind == "real":
            return self.whole[False]
        if real not in self.whole:
            runners = [r for r in self.runners if r.kind == "real" or not real]
            try:
                self.whole[real] = _attempt(runners, lambda runner: record(
                    self.model, self.example.args, self.example.kwargs, runner, self.kept,
                    self.wanted))
            except Exception as exc:  # noqa: BLE001 - kept, so a failure is not run twice
                self.whole[real] = exc
        if isinstance(self.whole[real], Exception):
            raise self.whole[real]
        return self.whole[real]

    def submodule_run(self, prefix: str, kept: set[int]) -> Record:
        """Record the submodule at ``prefix`` on the inputs the whole model's run gave it."""
        module = self.model.get_submodule(prefix)

        def run(runner: _Runner) -> Record:
            args, kwargs = self.model_run(runner.kind == "real").captured[prefix]
            return record(module, args, kwargs, runner, kept)

        return _attempt(self.runners, run)

    def failure(self, exc: Exception) -> str:
        return (f"Running `{type(self.model).__name__}.forward` on the example "
                f"({self.example.origin}) failed: {trace.describe_error(exc)}")


def complete(model: nn.Module, example: Example, traced: trace.Traced) -> None:
    """Fill in ``traced`` with what running ``example`` through ``model`` shows.

    Where fx left forwards opaque, the whole model is recorded on the example and that record
    replaces the fx graphs it covers, since it sees every connection across those forwards.
    Modules fx traced down both branches of a data-dependent ``if`` stay single calls in it
    (their fx graphs cover both paths); an opaque forward inside one is recorded on its own.
    Then every fx graph left gets the shapes of its values."""
    branched = traced.branched
    inside_branch = {o for o in traced.opaque if any(_under(o, b) for b in branched)}
    session = _Session(model, example, {u.prefix for u in traced.units} | set(traced.opaque),
                       _kept(model, "", branched))
    whole = None
    if traced.opaque or any(u.prefix for u in traced.units):
        try:
            whole = session.model_run()
        except Exception as exc:  # noqa: BLE001 - reported, not raised: fx's findings stand
            traced.run_error = session.failure(exc)
            return
    if set(traced.opaque) - inside_branch:
        _adopt(traced, "", model, whole)
    for prefix in sorted(inside_branch, key=lambda name: name.count(".")):
        if prefix not in traced.opaque or prefix not in whole.captured:
            continue
        try:
            run = session.submodule_run(prefix, _kept(model, prefix, branched))
        except Exception as exc:  # noqa: BLE001 - reported with the module
            traced.opaque[prefix] += (f" (running it on the example failed: "
                                      f"{trace.describe_error(exc)})")
            continue
        _adopt(traced, prefix, model.get_submodule(prefix), run)
    for name in traced.opaque:
        if name not in whole.captured:
            traced.opaque[name] += " (the run on the example never called it)"
    for unit in traced.units:
        inputs = ((example.args, example.kwargs) if not unit.prefix
                  else whole.captured.get(unit.prefix))
        if unit.dynamic or inputs is None:
            continue
        error = propagate_shapes(unit, *inputs, session.runners)
        if error is not None and not unit.prefix:
            traced.run_error = session.failure(error)


def _kept(model: nn.Module, prefix: str, branched: list[str]) -> set[int]:
    """The modules traced down both branches below ``prefix``: single calls in its record."""
    return {id(model.get_submodule(b)) for b in branched if b != prefix and _under(b, prefix)}


def _adopt(traced: trace.Traced, prefix: str, module: nn.Module, run: Record) -> None:
    """Put the record of the module at ``prefix`` in place of the fx graphs and opaque forwards
    it covers (those it recorded op by op)."""
    inlined = {_join(prefix, name) for name in run.inlined}
    branched = [b for b in traced.branched if b != prefix and _under(b, prefix)]

    def covered(name: str) -> bool:
        return name in inlined and not any(_under(name, b) for b in branched)

    seen = [name for name in traced.opaque if covered(name)]
    for name in seen:
        del traced.opaque[name]
    traced.recorded += seen
    traced.units = [u for u in traced.units
                    if u.dynamic or u.prefix in traced.branched or not covered(u.prefix)]
    traced.units.append(trace.Unit(prefix, run.gm, module, dynamic=True))


def needs_example(model: nn.Module) -> str:
    """How to let bnlint see what fx could not: the forward to run and the ways to give it an
    input."""
    try:
        signature = str(inspect.signature(model.forward))
    except (TypeError, ValueError):
        signature = "(...)"
    return (f"To see inside, bnlint runs `{type(model).__name__}.forward{signature}` once on an "
            "example input: give one with `--example 'file.py:EXPR'`, an `example_input()` "
            "function in the model's file, or `--input-shape` (`example=` in the Python API)")
