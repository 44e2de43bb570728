"""The abstract state: what may be true of the script's objects at one point, and its join.

Values are sets of labels, each naming an object the value may be. A model's label maps to
the set of ``Fact``s that may describe its mode. Labels are tuples: ``("new", line, col)`` for
an object built by a call, ``("field", parent, attr)`` for an attribute, ``("part", label)``
for some of a model's layers, ``("param", ...)`` and ``("arg", name)`` for a parameter,
``("output", label, spelled)`` for what a model returned (a tensor derived from its output
keeps it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from bnlint.files import display_path

TRAIN, EVAL, UNKNOWN = "train", "eval", "unknown"
# the mode a function's argument had when it was called: what a function summary is about
CALLER = "caller"


@dataclass(frozen=True)
class Fact:
    """One way a model may be in a mode: set at ``line`` (of ``file``, when that is another
    file than the one read) by ``what``.

    ``via`` is the helper (name, call line) that set it, seen from the code running now;
    ``looped`` the line of a loop whose next pass brings it (set later in the loop body);
    ``inferred`` the line of an inference that ran in this mode, ``trained`` of a training
    step; ``built``: a new module.
    """

    mode: str
    line: int
    what: str
    via: tuple[str, int] | None = None
    looped: int | None = None
    inferred: int | None = None
    trained: int | None = None
    built: bool = False
    file: Path | None = None

    @property
    def key(self) -> tuple:
        return (self.mode, self.line, self.what, self.file)

    def describe(self, line: Callable[[int], str] = "line {}".format) -> str:
        """Where the mode was set; ``line`` names a line of the script read."""
        text = f"set by {self.what} at "
        text += f"line {self.line} of {display_path(self.file)}" if self.file else line(self.line)
        if self.via:
            text += f", in `{self.via[0]}()` called at {line(self.via[1])}"
        if self.built:
            text += "; a new module starts in training mode"
        return text


AS_CALLED = Fact(CALLER, 0, "the caller")


def _first(values: Iterable):
    present = [v for v in values if v is not None]
    return min(present) if present else None


def merge_facts(facts: Iterable[Fact]) -> frozenset:
    """One fact per (mode, line, what): a fact that reaches a point several ways keeps the
    smallest of each annotation, so the set of possible states stays small."""
    facts = frozenset(facts)
    if len({f.key for f in facts}) == len(facts):
        return facts
    groups: dict[tuple, list[Fact]] = {}
    for fact in facts:
        groups.setdefault(fact.key, []).append(fact)
    return frozenset(
        group[0] if len(group) == 1 else replace(
            group[0], via=_first(f.via for f in group), looped=_first(f.looped for f in group),
            inferred=_first(f.inferred for f in group), trained=_first(f.trained for f in group))
        for group in groups.values())


def argument_path(label) -> tuple[str, ...] | None:
    """``("model",)`` for a summarised function's parameter ``model``, ``("self", "net")``
    for an attribute of one; None for any other object."""
    attrs = []
    while label[0] == "field":
        attrs.append(label[2])
        label = label[1]
    return (label[1], *reversed(attrs)) if label[0] == "arg" else None


def modes(facts: Iterable[Fact]) -> set[str]:
    return {f.mode for f in facts}


class State:
    """What may be true at one point of the script.

    ``envs`` holds one name -> labels map per active frame (module first); labels name the
    objects a value may be. ``fields`` maps (label, attribute) to labels, ``modes`` a model's
    label to its possible modes; ``confirmed`` holds the labels known to be modules,
    ``optimized`` those whose parameters an optimiser holds, ``cls`` an object's class.
    ``frozen`` maps a label whose parameters may have been frozen (``requires_grad`` set off)
    to where: (line, helper name or None); ``thawed`` holds the labels whose parameters may
    have been made trainable again, or written by the script itself (an EMA update).
    ``nograd`` is a description of what disabled autograd (truthy), False when it is enabled,
    None when unknown.
    """

    __slots__ = ("envs", "consts", "fields", "modes", "confirmed", "optimized", "cls", "nograd",
                 "frozen", "thawed")

    def __init__(self):
        self.envs: list[dict] = [{}]
        self.consts: list[dict] = [{}]
        self.fields: dict = {}
        self.modes: dict = {}
        self.confirmed: frozenset = frozenset()
        self.optimized: frozenset = frozenset()
        self.cls: dict = {}
        self.nograd: str | bool | None = False
        self.frozen: dict = {}
        self.thawed: frozenset = frozenset()

    def copy(self) -> State:
        new = State.__new__(State)
        new.envs = [dict(e) for e in self.envs]
        new.consts = [dict(c) for c in self.consts]
        new.fields = dict(self.fields)
        new.modes = dict(self.modes)
        new.confirmed, new.optimized = self.confirmed, self.optimized
        new.cls = dict(self.cls)
        new.nograd = self.nograd
        new.frozen = dict(self.frozen)
        new.thawed = self.thawed
        return new

    def assign(self, other: State) -> None:
        for slot in State.__slots__:
            setattr(self, slot, getattr(other, slot))

    def __eq__(self, other) -> bool:
        return all(getattr(self, s) == getattr(other, s) for s in State.__slots__)

    __hash__ = None

    def visible(self, parent: int) -> tuple:
        """The part of the state a function called from here can see: module globals, the
        names of the function it is nested in, and every object."""
        return (_frozen(self.envs[0]), _frozen(self.envs[parent]), _frozen(self.consts[0]),
                _frozen(self.consts[parent]), _frozen(self.fields), _frozen(self.modes),
                self.confirmed, self.optimized, _frozen(self.cls), self.nograd,
                _frozen(self.frozen), self.thawed)

    # -- the heap ---------------------------------------------------------------------------

    def field(self, label, attr: str) -> frozenset:
        """What ``label.attr`` may be; an attribute not set before is a new object, in its
        parent's mode."""
        key = (label, attr)
        if key not in self.fields:
            child = ("field", label, attr)
            self.fields[key] = frozenset({child})
            if label in self.modes:
                self.modes[child] = self.modes[label]
            if label in self.confirmed:
                self.confirmed |= {child}
        return self.fields[key]

    def descendants(self, labels: Iterable) -> set:
        found, todo = set(), list(labels)
        while todo:
            label = todo.pop()
            if label in found:
                continue
            found.add(label)
            todo.extend(child for (parent, _), children in self.fields.items()
                        if parent == label for child in children)
        return found

    def set_mode(self, labels: Iterable, fact: Fact) -> None:
        """``.train()``/``.eval()`` switch a module and every module inside it; switching a
        layer met while iterating over ``model.modules()`` leaves the model's mode unknown."""
        self.set_facts(labels, frozenset({fact}))

    def set_facts(self, labels: Iterable, facts: frozenset) -> None:
        direct = []
        for label in labels:
            if label[0] == "part":
                line = min(f.line for f in facts)
                self.set_mode([label[1]], Fact(UNKNOWN, line, "a switch of some layers"))
            else:
                direct.append(label)
        for label in self.descendants(direct):
            if label in self.modes or label in direct:
                self.modes[label] = facts

    def freeze(self, labels: Iterable, where: tuple) -> None:
        """The parameters of these modules were frozen at ``where`` (line, helper or None)."""
        for label in labels:
            if label[0] != "part":  # some layers of a model: which ones is not known
                self.frozen.setdefault(label, where)

    def thaw(self, labels: Iterable) -> None:
        """Some parameters of these modules may be trainable again (for some of the layers
        of ``model.modules()``: some of the model's)."""
        self.thawed |= frozenset(label[1] if label[0] == "part" else label for label in labels)

    def frozen_parts(self, labels: Iterable) -> list:
        """The modules among ``labels`` and inside them whose parameters may be frozen and
        were never made trainable again (nor made trainable as part of a larger module)."""
        if not self.frozen:
            return []
        thawed = self.descendants(self.thawed) if self.thawed else set()
        return [lb for lb in self.descendants(labels) if lb in self.frozen and lb not in thawed]

    def forget_mode(self, labels: Iterable, line: int, why: str) -> None:
        models = [lb for lb in labels if lb in self.modes]
        if models:
            self.set_mode(models, Fact(UNKNOWN, line, why))

    def facts_of(self, labels: Iterable) -> frozenset:
        return frozenset().union(*(self.modes.get(lb, frozenset()) for lb in labels))


def _frozen(mapping: dict) -> frozenset:
    return frozenset(mapping.items())


def _union_maps(a: dict, b: dict) -> dict:
    out = dict(a)
    for key, value in b.items():
        out[key] = out[key] | value if key in out else value
    return out


def join(states: Iterable[State | None]) -> State | None:
    """The state after control flow merges: anything possible on either path."""
    live = [s for s in states if s is not None]
    if not live:
        return None
    out = live[0].copy()
    for other in live[1:]:
        out.envs = [_union_maps(a, b) for a, b in zip(out.envs, other.envs)]
        out.consts = [{k: v for k, v in a.items() if b.get(k) == v}
                      for a, b in zip(out.consts, other.consts)]
        out.fields = _union_maps(out.fields, other.fields)
        out.modes = {label: merge_facts(facts)
                     for label, facts in _union_maps(out.modes, other.modes).items()}
        out.confirmed |= other.confirmed
        out.optimized |= other.optimized
        out.cls.update(other.cls)
        for label, where in other.frozen.items():
            out.frozen[label] = min(out.frozen.get(label, where), where,
                                    key=lambda w: (w[0], w[1] or ""))
        out.thawed |= other.thawed
        if out.nograd != other.nograd:
            out.nograd = out.nograd if (out.nograd and other.nograd) else None
    return out
