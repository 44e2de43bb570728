"""What a call does to the state: a switch of the mode, a pass of a model (reported as a
``Use``), a new object, a call of the file's own function (analysed at the call, with its
arguments), of another file's (applied through its summary) or of code bnlint cannot see
(after which the modes of what it was handed are unknown).

``Calls`` is the part of the ``Interpreter`` that handles calls; the rest of it (names,
statements, loops, expressions) is in ``interpreter``.
"""

from __future__ import annotations

import ast
from dataclasses import replace
from pathlib import Path

from bnlint.rules.modes.events import (
    FORWARD,
    GRADIENT_PENALTY,
    INFERENCE,
    TRAINING_STEP,
    Part,
    Place,
    Use,
)
from bnlint.rules.modes.frames import MAX_CALL_DEPTH, Frame
from bnlint.rules.modes.parsed import ClassInfo
from bnlint.rules.modes.project import Function
from bnlint.rules.modes.state import (
    AS_CALLED,
    EVAL,
    TRAIN,
    UNKNOWN,
    Fact,
    State,
    argument_path,
    join,
    merge_facts,
)
from bnlint.rules.modes.vocabulary import (
    COPIES,
    ENABLE_GRAD,
    EXPORTS,
    GRAD,
    HARMLESS,
    KEEPS_MODE,
    MODULE_EVIDENCE,
    NO_GRAD,
    QUERIES,
    SET_GRAD,
    SWITCHES,
    WRAPPERS,
    builds_model,
    dotted,
    exports_in_eval_anyway,
    library_batchnorm,
    parameters,
    switches_mode,
)


def _frozen(mapping: dict) -> frozenset:
    return frozenset(mapping.items())


class Calls:
    """How the ``Interpreter`` evaluates a call (it provides the names, statements and
    expressions these methods use)."""

    def call(self, node: ast.Call, st: State) -> frozenset:
        func = node.func
        if isinstance(func, ast.Name):
            if not self.is_local_name(func.id):
                return self.external(node, self.qualname(func), st, imported=True)
            labels = self.lookup(st, func.id)
            classes = [lb[1] for lb in labels if lb[0] == "class"]
            if classes:
                return self.construct(classes[0], node, st)
            if labels:
                return self.call_object(node, labels, func, st)
            found = self.find_function(func.id)
            if found is not None:
                positional, keywords = self.args(node, st)
                return self.inline(found[0], found[1], positional, keywords, None, node, st)
            if func.id in self.file.classes:
                return self.construct(self.file.classes[func.id], node, st)
            return self.external(node, func.id, st, imported=False)
        if isinstance(func, ast.Attribute):
            root = dotted(func)
            if root is not None and not self.is_local_name(root.split(".")[0]):
                return self.external(node, self.qualname(func), st, imported=True)
            receiver = self.ev(func.value, st)
            return self.call_method(node, receiver, func, st)
        self.ev(func, st)
        positional, keywords = self.args(node, st)
        self.unknown_call(node, [*positional, *keywords.values()], st, "a call")
        return frozenset()

    def call_method(self, node: ast.Call, receiver: frozenset, func: ast.Attribute,
                    st: State) -> frozenset:
        name = func.attr
        if receiver and all(lb[0] == "output" for lb in receiver):
            self.args(node, st)  # a method of a model's output: a tensor derived from it
            return receiver
        if name in SWITCHES:
            if not receiver and isinstance(func.value, ast.Name):
                receiver = frozenset({("bind", node.lineno, node.col_offset)})
                self.store(st, func.value.id, receiver)
            if receiver:
                return self.mode_call(node, receiver, func, st)
        if name == "forward" and any(lb in st.modes for lb in receiver):
            return self.call_object(node, receiver, func, st)
        for label in receiver:
            cls = label[1] if label[0] == "class" else st.cls.get(label)
            method = self.project.method(cls, name) if cls is not None else None
            if method is not None:
                positional, keywords = self.args(node, st)
                kind = {dotted(d) for d in method.node.decorator_list}
                if "staticmethod" in kind or label[0] == "class" and "classmethod" not in kind:
                    receiver = None
                return self.invoke(method, positional, keywords, receiver, node, st)
        if name not in KEEPS_MODE | QUERIES | {"apply"} and self.holds_object(st, receiver, name):
            target = frozenset().union(*(st.field(lb, name) for lb in receiver))
            return self.call_object(node, target, func, st)
        positional, keywords = self.args(node, st)
        if name in MODULE_EVIDENCE:
            st.confirmed |= {lb for lb in receiver if lb in st.modes}
        if name == "requires_grad_":
            value = node.args[0] if node.args else next(
                (k.value for k in node.keywords if k.arg == "requires_grad"), None)
            if value is not None and self.const(st, value) is False:
                st.freeze(receiver, (node.lineno, None))
            else:
                st.thaw(receiver)
        if name in KEEPS_MODE:
            return receiver
        if name in QUERIES:
            return frozenset()
        if name == "apply":
            if node.args and self.may_switch(node.args[0]):
                st.forget_mode(receiver, node.lineno, f"`{self.source(node)}`")
            return receiver
        st.forget_mode(receiver, node.lineno,
                       f"`{self.source(func)}()`, a method bnlint cannot see")
        self.unknown_call(node, [*positional, *keywords.values()], st, f"`{name}()`")
        return frozenset()

    def holds_object(self, st: State, receiver: frozenset, name: str) -> bool:
        """Whether ``receiver.name`` is an attribute holding a module or object (so
        ``receiver.name(...)`` calls it) rather than a method."""
        for parent in receiver:
            cls = st.cls.get(parent)
            if cls is not None and name in cls.attributes:
                return True
            held = st.fields.get((parent, name), frozenset())
            if any(lb in st.modes or lb in st.cls for lb in held):
                return True
        return False

    def may_switch(self, node: ast.AST) -> bool:
        """Whether a function given to ``model.apply`` may switch modes of some layers."""
        if isinstance(node, ast.Name):
            found = self.find_function(node.id)
            if found is None:
                return True
            node = found[0]
        return switches_mode(node)

    def call_object(self, node: ast.Call, labels: frozenset, func: ast.AST,
                    st: State) -> frozenset:
        for label in labels:
            cls = st.cls.get(label)
            if cls is not None and not self.project.is_module(cls):
                method = self.project.method(cls, "__call__")
                if method is not None:
                    positional, keywords = self.args(node, st)
                    return self.invoke(method, positional, keywords, labels, node, st)
        self.args(node, st)
        return self.model_call(node, labels, func, st)

    def mode_call(self, node: ast.Call, receiver: frozenset, func: ast.Attribute,
                  st: State) -> frozenset:
        self.args(node, st)
        st.confirmed |= {lb for lb in receiver if lb[0] != "part"}
        what = f"`{self.source(node)}`"
        if func.attr == "eval":
            st.set_mode(receiver, Fact(EVAL, node.lineno, what))
            return receiver
        argument = node.args[0] if node.args else next(
            (k.value for k in node.keywords if k.arg == "mode"), None)
        value = True if argument is None else self.const(st, argument)
        overriding = self.overriding_train(st, receiver)
        if overriding is not None:
            st.set_mode(receiver, Fact(UNKNOWN, node.lineno,
                                       f"{what}, which `{overriding}.train()` overrides"))
        elif isinstance(value, bool):
            st.set_mode(receiver, Fact(TRAIN if value else EVAL, node.lineno, what))
        elif isinstance(value, tuple):
            st.set_mode(receiver, Fact(UNKNOWN, node.lineno, what))
            for label in st.descendants(receiver):
                if label in st.modes:
                    st.modes[label] = value[1]
        else:
            st.set_mode(receiver, Fact(UNKNOWN, node.lineno, what))
        return receiver

    def overriding_train(self, st: State, receiver: frozenset) -> str | None:
        """The class of the project, held by the modules switched, that overrides ``train()``
        (which may keep some layers in eval mode), if any."""
        for label in st.descendants(receiver):
            cls = st.cls.get(label)
            if cls is not None and self.project.is_module(cls):
                found = self.project.overrides_train(cls)
                if found is not None:
                    return found
        return None

    def construct(self, cls: ClassInfo, node: ast.Call, st: State,
                  evaluated: tuple | None = None) -> frozenset:
        """A new object of a class of the project. A module known to hold no BatchNorm is not
        followed; one of this file counts as a module as built, one of another file when it
        holds BatchNorm (else once the script uses it as a module)."""
        batchnorm = self.project.holds_batchnorm(cls) if self.project.is_module(cls) else False
        model = batchnorm is not False
        confirmed = cls.file is self.file or batchnorm is True
        label = self.new_object(st, node, model, confirmed)
        st.cls[label] = cls
        init = self.project.method(cls, "__init__")
        positional, keywords = evaluated or self.args(node, st)
        if init is not None and not (init.file is not self.file
                                     and self.builds_alone(cls, [*positional, *keywords.values()])):
            self.invoke(init, positional, keywords, frozenset({label}), node, st)
        return frozenset({label})

    def builds_alone(self, cls: ClassInfo, arguments: list[frozenset]) -> bool:
        """Whether building a module can do nothing but make it: it is given no object the
        analysis follows, and no ``__init__`` of its classes switches a mode. (Then what its
        ``__init__`` does need not be worked out.)"""
        return self.project.is_module(cls) and not any(arguments) and not any(
            switches_mode(owner.methods["__init__"]) for owner in self.project.lineage(cls)
            if "__init__" in owner.methods)

    def external(self, node: ast.Call, name: str | None, st: State,
                 imported: bool) -> frozenset:
        """A call of something defined outside the file, by its dotted name (``imported``:
        its root is an imported name, so the project may define it)."""
        name = name or ""
        grad = self.grad_switch(node, st)
        if name in SET_GRAD:
            self.args(node, st)
            st.nograd = grad
            return frozenset()
        positional, keywords = self.args(node, st)
        self.note_optimizer(node, name, st)
        if name == GRAD:
            self.gradient_penalty(node, positional, keywords, st)
            return frozenset()
        if name in EXPORTS:
            module = positional[0] if positional else keywords.get(EXPORTS[name], frozenset())
            module_node = node.args[0] if node.args else next(
                (k.value for k in node.keywords if k.arg == EXPORTS[name]), None)
            if not exports_in_eval_anyway(node, name, self.qualname):
                models = self.models(module, st)
                if models:
                    self.emit(INFERENCE, node, models, module_node, st, export=name)
            return self.copy(st, node, module) if name.startswith("torch.jit.") else frozenset()
        if name in WRAPPERS:
            wrapped = positional[0] if positional else frozenset()
            for label in wrapped:
                st.fields[(label, "module")] = frozenset({label})
            return wrapped
        if name in COPIES:
            return self.copy(st, node, positional[0] if positional else frozenset())
        if name in HARMLESS or name in NO_GRAD or name in ENABLE_GRAD:
            return frozenset()
        target = self.project.resolve(name, self.file) if imported else None
        if isinstance(target, ClassInfo):
            return self.construct(target, node, st, (positional, keywords))
        if isinstance(target, Function):
            receiver = frozenset({("class", target.cls)}) if target.cls is not None and any(
                isinstance(d, ast.Name) and d.id == "classmethod"
                for d in target.node.decorator_list) else None
            return self.invoke(target, positional, keywords, receiver, node, st)
        built = builds_model(name, node, self.qualname)
        if built is not None:
            label = self.new_object(st, node, True, built)
            self.built[label] = (library_batchnorm(name, node), self.source(node.func))
            if name.startswith("torch.nn."):
                for index, child in enumerate(positional):
                    st.fields[(label, str(index))] = child
            else:
                self.unknown_call(node, [*positional, *keywords.values()], st,
                                  f"`{self.source(node.func)}()`")
            return frozenset({label})
        self.unknown_call(node, [*positional, *keywords.values()], st,
                          f"`{self.source(node.func)}()`")
        return frozenset()

    def gradient_penalty(self, node: ast.Call, positional: list[frozenset],
                         keywords: dict[str, frozenset], st: State) -> None:
        """``torch.autograd.grad`` of a model's output with ``create_graph=True``: the
        gradient is itself trained on, a penalty on the model's input gradient."""
        create = next((k.value for k in node.keywords if k.arg == "create_graph"), None)
        if create is None or self.const(st, create) is not True:
            return
        outputs = positional[0] if positional else keywords.get("outputs", frozenset())
        outputs = sorted((lb for lb in outputs if lb[0] == "output"), key=str)
        models = self.models(frozenset(lb[1] for lb in outputs), st)
        if models:
            self.emit(GRADIENT_PENALTY, node, models, None, st,
                      variable=next((lb[2] for lb in outputs if lb[2]), None))

    def copy(self, st: State, node: ast.Call, source: frozenset) -> frozenset:
        """A new module in the same mode as ``source`` (a deep copy, a TorchScript module)."""
        label = ("new", node.lineno, node.col_offset)
        facts = st.facts_of(source)
        if facts:
            st.modes[label] = facts
            if source & st.confirmed:
                st.confirmed |= {label}
        if len(source) == 1:
            (original,) = source
            self.built[label] = (self.holds_batchnorm(st, original),
                                 self.part(st, original, None).kind)
        return frozenset({label})

    def note_optimizer(self, node: ast.Call, name: str, st: State) -> None:
        """Remember the models whose parameters go to an optimiser (they are being trained)."""
        if name in HARMLESS:
            return
        values = [*node.args, *(k.value for k in node.keywords)]
        while values:
            value = values.pop()
            if isinstance(value, (ast.List, ast.Tuple)):
                values.extend(value.elts)
            elif isinstance(value, ast.Dict):
                values.extend(v for v in value.values if v is not None)
            elif (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
                  and value.func.attr in ("parameters", "named_parameters")):
                st.optimized |= self._peek(st, value.func.value)

    def unknown_call(self, node: ast.Call, values: list[frozenset], st: State, what: str) -> None:
        """A model handed to code bnlint cannot see may come back in any mode."""
        for labels in values:
            st.forget_mode(labels, node.lineno, f"{what}, which bnlint cannot see")

    # -- what is reported ---------------------------------------------------------------------

    def models(self, labels, st: State) -> list:
        """The labels among ``labels`` that are modules whose mode is followed. (A summary
        also follows its arguments: the caller knows whether they are modules.)"""
        return [lb for lb in labels if lb in st.modes and (
            lb in st.confirmed or self.summarising and argument_path(lb) is not None)]

    def model_call(self, node: ast.Call, labels: frozenset, target: ast.AST,
                   st: State) -> frozenset:
        """A forward pass: inference when autograd is off, a training step when a backward
        pass follows in the same loop or function. Returns its output's labels."""
        models = self.models(labels, st)
        if not models:
            return frozenset()
        outputs = frozenset(("output", label, self.variable(target)) for label in models)
        if st.nograd:
            self.emit(INFERENCE, node, models, target, st)
        elif self.frame.training:
            self.emit(TRAINING_STEP, node, models, target, st)
        elif self.summarising:
            self.emit(FORWARD, node, models, target, st)
        return outputs

    def emit(self, kind: str, node: ast.Call, models: list, target: ast.AST | None, st: State,
             *, extra: frozenset = frozenset(), variable: str | None = None,
             export: str | None = None, exporter: str | None = None,
             grad: str | None = None, callee: tuple[str, Path] | None = None,
             parts: tuple[Part, ...] | None = None) -> None:
        """Report a pass of ``models`` at ``node``: ``extra`` holds modes a summarised
        function may have set on some path before the pass. ``parts`` given: a training step
        of a summarised function in a mode it set itself, reported for its frozen parts
        alone (with no modes of its own)."""
        facts = frozenset() if parts is not None else st.facts_of(models) | extra
        marked = {INFERENCE: (EVAL, "inferred"), TRAINING_STEP: (TRAIN, "trained")}.get(kind)
        if marked is not None and parts is None:
            mode, mark = marked
            for label in models:
                st.modes[label] = merge_facts(
                    replace(f, **{mark: node.lineno})
                    if f.mode == mode and getattr(f, mark) is None else f
                    for f in st.modes[label])
        if variable is None and target is not None:
            variable = self.variable(target)
        shown = variable or (self.source(target) if target is not None else None)
        frame = self.frame
        helper = None
        if frame.call_line and variable and variable.split(".")[0] in frame.params:
            helper = (frame.name, frame.call_line)
        if export is not None and exporter is None:
            exporter = self.source(node.func)
        place = Place(self.file.text, frame.stmts[-1], tuple(frame.loops),
                      frame.nograd_withs[0] if frame.nograd_withs else None,
                      tuple(frame.func.body) if frame.decorated_nograd else None)
        line, col = self.file.position(node)
        if parts is not None:
            pass
        elif kind == TRAINING_STEP and self.summarising:
            parts = tuple(Part(".".join(path), None, None, st.modes[label])
                          for label in st.descendants(models)
                          if label in st.modes and (path := argument_path(label)) is not None)
        elif kind == TRAINING_STEP:
            parts = self.frozen_parts(st, models, variable)
        elif kind == GRADIENT_PENALTY:
            parts = tuple(self.part(st, label, variable) for label in models)
        else:
            parts = ()
        use = Use(kind, line, col, facts, frozenset(models), place, variable, shown,
                  grad=(grad or st.nograd or None) if kind == INFERENCE and not export else None,
                  export=export, exporter=exporter, helper=helper, callee=callee,
                  optimized=bool(st.descendants(models) & st.optimized), parts=parts)
        self.sink.setdefault((kind, line, col), {})[use] = None

    def frozen_parts(self, st: State, models: list, variable: str | None,
                     inside: tuple | None = None) -> tuple[Part, ...]:
        """The parts of the models trained here whose parameters are frozen, each spelled
        from ``variable`` by the attributes leading to it. ``inside``: the step is in a
        summarised function, (the models' path there, the parts its use recorded, the
        summary, the call): a part's modes are those the function gave it, or the nearest
        module holding it."""
        frozen = st.frozen_parts(models)
        if not frozen:
            return ()
        paths: dict = dict.fromkeys(models, ())
        grown = True
        while grown:
            grown = False
            for (parent, attr), children in st.fields.items():
                if parent in paths:
                    for child in children:
                        if child not in paths:
                            paths[child] = (*paths[parent], attr)
                            grown = True
        found = []
        for label in frozen:
            path = paths.get(label)
            name = ".".join((variable, *path)) if variable and path is not None else None
            part = replace(self.part(st, label, name), frozen=st.frozen[label])
            if inside is not None:
                root, recorded, summary, node = inside
                full = ".".join((*root, *(path or ())))
                nearest = max((p for p in recorded if full == p.name
                               or full.startswith(p.name + ".")),
                              key=lambda p: len(p.name), default=None)
                if path is None or nearest is None:
                    continue
                part = replace(part, facts=self.imported(nearest.facts, summary, node))
            found.append(part)
        return tuple(found)

    def part(self, st: State, label, name: str | None) -> Part:
        cls = st.cls.get(label)
        kind = cls.name if cls is not None else self.built.get(label, (None, None))[1]
        return Part(name, kind, self.holds_batchnorm(st, label), st.modes.get(label, frozenset()))

    def holds_batchnorm(self, st: State, label, seen: set | None = None) -> bool | None:
        """Whether a module holds BatchNorm: by its class in the project, the library call
        that built it, the attribute of a class it is, or the modules inside it."""
        seen = set() if seen is None else seen
        if label in seen:
            return None
        seen.add(label)
        cls = st.cls.get(label)
        answer = None
        if cls is not None:
            answer = self.project.holds_batchnorm(cls) if self.project.is_module(cls) else None
        elif label in self.built:
            answer = self.built[label][0]
        elif label[0] == "field" and st.cls.get(label[1]) is not None:
            answer = self.project.attribute_batchnorm(st.cls[label[1]], label[2])
        if answer is not None:
            return answer
        children = [child for (parent, _), held in st.fields.items() if parent == label
                    for child in held]
        return True if any(self.holds_batchnorm(st, child, seen) for child in children) \
            else None

    def variable(self, target: ast.AST | None) -> str | None:
        if isinstance(target, ast.Attribute) and target.attr == "forward":
            target = target.value
        if target is None or dotted(target) is None:
            return None
        return self.source(target)

    # -- calls of functions -----------------------------------------------------------------

    def invoke(self, function: Function, positional: list[frozenset],
               keywords: dict[str, frozenset], receiver: frozenset | None, node: ast.Call,
               st: State) -> frozenset:
        """A call of a function of the project: analysed here when it is in this file, else
        applied through its summary."""
        if function.file is self.file:
            return self.inline(function.node, 0, positional, keywords, receiver, node, st)
        summary = self.summaries.of(function) if self.summaries is not None else None
        if summary is None:
            self.unknown_call(node, [*positional, *keywords.values(), receiver or frozenset()],
                              st, f"`{function.node.name}()`")
            return frozenset()
        return self.apply(summary, node, positional, keywords, receiver, st)

    def inline(self, func, parent: int, positional: list[frozenset],
               keywords: dict[str, frozenset], receiver: frozenset | None,
               node: ast.Call, st: State) -> frozenset:
        """Analyse a function of the file at this call, with these arguments."""
        active = [f.func for f in self.stack]
        if func in active or len(self.stack) > MAX_CALL_DEPTH:
            self.unknown_call(node, [*positional, *keywords.values()], st, f"`{func.name}()`")
            return frozenset()
        self.inlined.add(id(func))
        params = parameters(func)
        bound: dict[str, frozenset] = {}
        consts: dict = {}
        if receiver is not None and params:
            bound[params[0].arg] = receiver
            params = params[1:]
        for param, value, arg_node in zip(params, positional, node.args):
            bound[param.arg] = value
            const = self.const(st, arg_node)
            if const is not None:
                consts[param.arg] = const
        names = {p.arg for p in [*params, *func.args.kwonlyargs]}
        for keyword in node.keywords:
            if keyword.arg in names:
                bound[keyword.arg] = keywords[keyword.arg]
                const = self.const(st, keyword.value)
                if const is not None:
                    consts[keyword.arg] = const
        return self.run_function(func, parent, bound, consts, st, call=node)

    def run_function(self, func, parent: int, bound: dict, consts: dict, st: State,
                     call: ast.Call | None) -> frozenset:
        """Analyse a function body from ``st``; ``st`` becomes the state after it returns.

        Results are remembered per entry state (what the function can see of it), so a helper
        called at every pass of nested loops is analysed once per distinct state."""
        inherited = self.frame.training if call else False
        key = (id(func), inherited, parent, _frozen(bound), _frozen(consts), *st.visible(parent))
        if key not in self.memo:
            sink, self.sink = self.sink, {}
            try:
                self.memo[key] = (*self._run_function(func, parent, bound, consts, st,
                                                      call, inherited), self.sink)
            finally:
                self.sink = sink
        exit_state, returned, found = self.memo[key]
        for use_key, uses in found.items():
            into = self.sink.setdefault(use_key, {})
            for use in uses:
                into.setdefault(use)
        before = st.modes
        for index in {0, parent}:
            st.envs[index] = dict(exit_state.envs[index])
            st.consts[index] = dict(exit_state.consts[index])
        for slot in ("fields", "modes", "cls"):
            setattr(st, slot, dict(getattr(exit_state, slot)))
        st.confirmed, st.optimized = exit_state.confirmed, exit_state.optimized
        st.nograd = exit_state.nograd
        st.frozen, st.thawed = dict(exit_state.frozen), exit_state.thawed
        if call is not None:
            for label, facts in st.modes.items():
                old = before.get(label, frozenset())
                if facts != old:
                    st.modes[label] = merge_facts(
                        f if f in old else replace(f, via=(func.name, call.lineno))
                        for f in facts)
        return returned

    def _run_function(self, func, parent, bound, consts, st, call, inherited):
        frame = Frame(func.name, func, parent, inherited=inherited,
                      call_line=call.lineno if call else None, scope=self.file.scope(func))
        entry = st.copy()
        entry.envs.append(dict(bound))
        entry.consts.append(dict(consts))
        decorated = self.decorator_grad(func, entry)
        if decorated is not None:
            entry.nograd = decorated
            frame.decorated_nograd = bool(decorated)
        self.stack.append(frame)
        frame.regions.append(self.file.calls_backward(func))
        try:
            end = self.block(func.body, entry.copy())
        finally:
            self.stack.pop()
        exit_state = join([end, *frame.returns]) or entry
        exit_state.envs.pop()
        exit_state.consts.pop()
        if decorated is not None:
            exit_state.nograd = st.nograd
        return exit_state, frame.return_labels

    def decorator_grad(self, func, st: State) -> str | bool | None:
        for decorator in func.decorator_list:
            call = decorator if isinstance(decorator, ast.Call) else ast.Call(
                func=decorator, args=[], keywords=[])
            grad = self.grad_switch(call, st)
            if grad is not None:
                return f"a function decorated with `@{self.source(decorator)}`" if grad else False
        return None

    # -- calls of other files' functions, through their summaries ---------------------------

    def apply(self, summary, node: ast.Call, positional: list[frozenset],
              keywords: dict[str, frozenset], receiver: frozenset | None, st: State) -> frozenset:
        """What a call of a summarised function does here: its passes of the arguments (in
        the modes they have here), then the modes it leaves them in, the attributes it sets,
        and what it returns."""
        roots: dict[str, tuple[frozenset, ast.AST | None]] = {}
        params = list(summary.params)
        if receiver is not None and params:
            owner = node.func.value if isinstance(node.func, ast.Attribute) else None
            roots[params.pop(0)] = (receiver, owner)
        unplaced: list[frozenset] = []
        starred = False
        for index, (labels, arg) in enumerate(zip(positional, node.args)):
            starred = starred or isinstance(arg, ast.Starred)
            if starred or index >= len(params):
                unplaced.append(labels)
            else:
                roots[params[index]] = (labels, arg)
        for keyword in node.keywords:
            if keyword.arg in summary.names and keyword.arg not in roots:
                roots[keyword.arg] = (keywords[keyword.arg], keyword.value)
            else:
                unplaced.append(keywords[keyword.arg or "**"])
        self.unknown_call(node, unplaced, st, f"`{summary.name}()`")

        def labels_of(path: tuple[str, ...]) -> frozenset:
            labels = roots[path[0]][0] if path[0] in roots else frozenset()
            for attr in path[1:]:
                labels = frozenset().union(*(st.field(lb, attr) for lb in labels))
            return labels

        def variable(path: tuple[str, ...]) -> str | None:
            expression = roots[path[0]][1] if path[0] in roots else None
            if expression is None or dotted(expression) is None:
                return None
            return ".".join([self.source(expression), *path[1:]])

        for path in summary.confirms:
            st.confirmed |= {lb for lb in labels_of(path) if lb in st.modes}
        for use, paths in summary.effects:
            models = self.models(frozenset().union(*map(labels_of, paths)), st)
            if not models:
                continue
            kind, grad = use.kind, use.grad
            if kind == FORWARD:
                kind = INFERENCE if st.nograd else TRAINING_STEP if self.frame.training \
                    else FORWARD if self.summarising else None
                grad = st.nograd or None
            if kind is None:
                continue
            if AS_CALLED not in use.facts:  # a mode the function set: only frozen parts matter
                parts = self.frozen_parts(st, models, variable(paths[0]),
                                          (paths[0], use.parts, summary, node))
                if parts:
                    self.emit(kind, node, models, None, st, variable=variable(paths[0]),
                              callee=(summary.name, summary.file), parts=parts)
                continue
            self.emit(kind, node, models, None, st, extra=self.imported(use.facts, summary, node),
                      variable=variable(paths[0]), export=use.export, exporter=use.exporter,
                      grad=grad, callee=(summary.name, summary.file))
        exits = dict(summary.exits)
        for path, facts in sorted(summary.exits, key=lambda item: len(item[0])):
            labels = labels_of(path)
            if not labels or exits.get(path[:-1]) == facts:
                continue
            new = self.imported(facts, summary, node)
            if AS_CALLED in facts:
                new |= st.facts_of(labels)
            if new:
                st.set_facts(labels, merge_facts(new))
        for path in summary.optimizes:
            st.optimized |= labels_of(path)
        for path in summary.freezes:
            st.freeze(labels_of(path), (node.lineno, summary.name))
        for path in summary.thaws:
            st.thaw(labels_of(path))
        for path, attr, values in summary.stores:
            value = self.values(values, labels_of, summary, node, st, (*path, attr))
            for parent in labels_of(path):
                st.fields[(parent, attr)] = value
        return self.values(summary.returns, labels_of, summary, node, st, ())

    def imported(self, facts: frozenset, summary, node: ast.Call) -> frozenset:
        """Modes a function of another file set, as seen from this call of it."""
        return frozenset(
            replace(f, via=(summary.name, node.lineno), file=f.file or summary.file,
                    looped=None, inferred=node.lineno if f.inferred else None,
                    trained=node.lineno if f.trained else None)
            for f in facts if f != AS_CALLED)

    def values(self, items, labels_of, summary, node: ast.Call, st: State,
               where: tuple) -> frozenset:
        """Labels, here, of what a summary says a function returns or stores: its arguments
        (by path), a class, or a new object (``NewObject``)."""
        out: set = set()
        for item in items:
            if isinstance(item, tuple):
                out |= labels_of(item)
            elif isinstance(item, ClassInfo):
                out.add(("class", item))
            else:
                label = ("new", node.lineno, node.col_offset, *where)
                if item.facts:
                    st.modes[label] = merge_facts(
                        st.modes.get(label, frozenset()) | self.imported(item.facts, summary,
                                                                         node))
                if item.confirmed:
                    st.confirmed |= {label}
                if item.cls is not None:
                    st.cls[label] = item.cls
                out.add(label)
        return frozenset(out)
