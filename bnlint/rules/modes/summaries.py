"""What a function of another file of the project does to the modules it is given, worked
out once by running the interpreter on it with its arguments in the mode "as the caller left
them" (``AS_CALLED``), and applied at each call site (``Interpreter.apply``).

A summary says which passes the function makes of an argument, or of an attribute of one
(``self.model``), in the caller's mode, and its training steps in a mode it set itself, whose
frozen parts only the caller knows (``effects``); the modes it leaves them in (``exits``);
which it shows to be modules (``confirms``), hands to an optimiser (``optimizes``), freezes
(``freezes``) or makes trainable again (``thaws``); the attributes it sets (``stores``, as
``__init__`` does) and what it returns. Arguments are named by path: ``("model",)``,
``("self", "model")``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from bnlint.rules.modes.events import TRAINING_STEP
from bnlint.rules.modes.frames import BUDGET, Frame, TooComplex
from bnlint.rules.modes.interpreter import Interpreter
from bnlint.rules.modes.parsed import ClassInfo
from bnlint.rules.modes.project import Function, Project, search_path
from bnlint.rules.modes.state import AS_CALLED, State, argument_path
from bnlint.rules.modes.vocabulary import parameters

# summaries being worked out at once (a helper calling a helper of another file...)
MAX_FILE_DEPTH = 8
# statements interpreted to summarise one function, before calling it unknown
SUMMARY_BUDGET = BUDGET // 10


@dataclass(frozen=True, eq=False)
class NewObject:
    """An object a function builds and returns or stores: its modes, whether it is known to
    be a module, its class in the project."""

    facts: frozenset
    confirmed: bool
    cls: ClassInfo | None


@dataclass(frozen=True, eq=False)
class Summary:
    name: str
    file: Path  # absolute
    params: tuple[str, ...]  # filled by positional arguments, in order (``self`` first)
    names: frozenset  # parameters a keyword argument may name
    effects: tuple  # (Use, paths of the arguments it is about)
    exits: tuple  # (path, facts)
    confirms: tuple
    optimizes: tuple
    freezes: tuple
    thaws: tuple
    stores: tuple  # (path, attribute, values)
    returns: tuple  # values: paths, classes, NewObjects


class Summaries:
    """The summaries of one project's functions, each worked out once while its files are
    unchanged."""

    def __init__(self, project: Project):
        self.project = project
        self.done: dict[int, Summary | None] = {}
        self.interpreters: dict[Path, Interpreter] = {}
        self.busy: set[int] = set()

    def of(self, function: Function) -> Summary | None:
        """The function's summary; None when it cannot be worked out (it calls back into a
        function being summarised, or goes through too many files)."""
        key = id(function.node)
        if key not in self.done and len(self.busy) >= MAX_FILE_DEPTH:
            return None
        if key not in self.done:
            self.done[key] = None  # a call back into itself is unknown
            interpreter = self.interpreters.get(function.file.path)
            if interpreter is None or id(interpreter) in self.busy:
                interpreter = Interpreter(function.file, self.project, self, summarising=True)
                self.interpreters.setdefault(function.file.path, interpreter)
            self.busy.add(id(interpreter))
            try:
                self.done[key] = summarise(interpreter, function)
            except (TooComplex, RecursionError):
                pass
            finally:
                self.busy.discard(id(interpreter))
        return self.done[key]


_projects: dict[tuple[Path, ...], Summaries] = {}


def for_script(path: Path | None) -> Summaries:
    """The summaries for a script's project, shared by every script of it in this process;
    started afresh when a file read before has changed."""
    roots = search_path(path) if path is not None else ()
    summaries = _projects.get(roots)
    if summaries is None or not summaries.project.unchanged():
        summaries = _projects[roots] = Summaries(Project(roots))
    return summaries


def summarise(interpreter: Interpreter, function: Function) -> Summary:
    func, cls = function.node, function.cls
    st = State()
    params = parameters(func)
    names = [a.arg for a in [*params, *func.args.kwonlyargs]]
    bound = {name: frozenset({("arg", name)}) for name in names}
    for name in names:
        st.modes[("arg", name)] = frozenset({AS_CALLED})
    decorators = {d.id for d in func.decorator_list if isinstance(d, ast.Name)}
    if cls is not None and params and "staticmethod" not in decorators:
        first = ("arg", params[0].arg)
        if "classmethod" in decorators:
            bound[params[0].arg] = frozenset({("class", cls)})
            del st.modes[first]
        else:
            st.cls[first] = cls
    interpreter.stack = [Frame("<module>")]
    interpreter.sink = {}
    interpreter.budget = SUMMARY_BUDGET
    returned = interpreter.run_function(func, 0, bound, {}, st, call=None)
    uses, interpreter.sink = interpreter.sink, interpreter.uses

    def values(labels) -> tuple:
        out = []
        for label in labels:
            path = argument_path(label)
            if path is not None:
                out.append(path)
            elif label[0] == "class":
                out.append(label[1])
            elif label in st.modes or label in st.cls:
                out.append(NewObject(st.modes.get(label, frozenset()), label in st.confirmed,
                                     st.cls.get(label)))
        return tuple(out)

    effects = []
    for found in uses.values():
        for use in found:
            paths = tuple(p for p in map(argument_path, use.labels) if p is not None)
            # a training step in a mode the function set: the caller may have frozen parts
            if paths and (AS_CALLED in use.facts or use.kind == TRAINING_STEP):
                effects.append((use, paths))
    paths = {label: argument_path(label) for label in st.modes}
    return Summary(
        name=func.name,
        file=function.file.path.resolve(),
        params=tuple(a.arg for a in params),
        names=frozenset(names),
        effects=tuple(effects),
        exits=tuple((path, facts) for label, facts in st.modes.items()
                    if (path := paths[label]) is not None and facts != {AS_CALLED}),
        confirms=tuple(p for lb in st.confirmed if (p := argument_path(lb)) is not None),
        optimizes=tuple(p for lb in st.optimized if (p := argument_path(lb)) is not None),
        freezes=tuple(p for lb in st.frozen if (p := argument_path(lb)) is not None),
        thaws=tuple(p for lb in st.thawed if (p := argument_path(lb)) is not None),
        stores=tuple((path, attr, values(labels)) for (parent, attr), labels in st.fields.items()
                     if (path := argument_path(parent)) is not None
                     and labels != {("field", parent, attr)}),
        returns=values(returned),
    )
