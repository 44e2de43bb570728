"""The plain data that flows out of every stage: findings, per-model results, the report."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from bnlint.rules import Safety

if TYPE_CHECKING:
    from bnlint.edits import Edit


class Instance(NamedTuple):
    """One module (or functional call) of one model that a finding stands for."""

    model: str | None
    module: str | None
    related: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "module": self.module, "related": list(self.related)}


@dataclass(frozen=True)
class Finding:
    """One problem, at one place in the user's code.

    ``module`` is the qualified name of the module a fix touches (if any), ``related`` the other
    modules or functions involved, in dataflow order. ``fix`` is ``None`` when bnlint cannot fix
    it, ``Safety.SAFE`` when the fixed model computes the same function, ``Safety.UNSAFE`` when
    the fix changes the function and the model needs retraining. ``instances`` lists every
    module the finding stands for, its own ``model``/``module``/``related`` first: one line of
    code that builds eight layers is one finding with eight instances. A script rule's finding
    has none.
    In a notebook, ``cell`` is the cell's number (from 1, every cell counted) and ``line`` the
    line in that cell.
    """

    code: str
    severity: str
    message: str
    model: str | None = None
    module: str | None = None
    related: tuple[str, ...] = ()
    path: str | None = None
    line: int | None = None
    col: int | None = None
    fix: Safety | None = None
    instances: tuple[Instance, ...] = ()
    cell: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "model": self.model,
            "module": self.module,
            "related": list(self.related),
            "path": self.path,
            "cell": self.cell,
            "line": self.line,
            "col": self.col,
            "fix": None if self.fix is None else {"safety": self.fix},
            "instances": [i.to_dict() for i in self.instances],
        }


@dataclass
class ModelResult:
    """What happened to one model spec: analysed (fully or in part), skipped, or failed.

    ``example`` is the input its forward was given (a ``bnlint.inputs.Example``), described in
    JSON as ``input``; ``notes`` say how it was analysed (shown with --verbose)."""

    spec: str
    status: str  # "ok" | "skipped" | "error"
    reason: str | None = None
    # "full" | "branches" | "dynamic" | "partial" | None when nothing was traced
    trace: str | None = None
    opaque: list[str] = field(default_factory=list)
    detail: str | None = None  # the traceback behind an error, shown with --verbose
    path: str | None = None  # the file the spec names, if it names one
    line: int | None = None  # where in that file the error arose, when known
    example: Any = field(default=None, repr=False)
    notes: list[str] = field(default_factory=list)
    # "fx" | "branches" | "dynamic" -> the modules (qualified names, "" the model) each saw
    traced_by: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "status": self.status,
            "reason": self.reason,
            "trace": self.trace,
            "opaque": list(self.opaque),
            "path": self.path,
            "line": self.line,
            "input": None if self.example is None else self.example.describe(),
            "traced_by": {method: list(names) for method, names in self.traced_by.items()},
        }


@dataclass
class Report:
    """The result of a lint run: findings plus what happened to every model.

    ``rules`` are the codes that ran; ``warnings`` say why a run checked less than asked (no
    rule enabled, nothing to check). ``fixed`` is ``None`` unless the run fixed files: then it
    holds the findings the edits resolved, and ``findings`` what remains. ``baselined`` is
    ``None`` unless a baseline was applied: then it counts the findings it hid.
    """

    findings: list[Finding] = field(default_factory=list)
    models: list[ModelResult] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    fixed: list[Finding] | None = None
    baselined: int | None = None

    @property
    def summary(self) -> dict[str, Any]:
        by_code: dict[str, int] = {}
        for f in self.findings:
            by_code[f.code] = by_code.get(f.code, 0) + 1
        statuses = [m.status for m in self.models]
        summary = {
            "findings": len(self.findings),
            "by_code": dict(sorted(by_code.items())),
            "fixable": sum(f.fix == Safety.SAFE for f in self.findings),
            "unsafe_fixable": sum(f.fix == Safety.UNSAFE for f in self.findings),
            "models_analysed": statuses.count("ok"),
            "models_by_file": self.models_by_file,
            "models_partly_analysed": len(self.partial),
            "models_skipped": statuses.count("skipped"),
            "models_failed": statuses.count("error"),
            "rules": list(self.rules),
        }
        if self.fixed is not None:
            summary["fixed"] = len(self.fixed)
        if self.baselined is not None:
            summary["baselined"] = self.baselined
        return summary

    @property
    def models_by_file(self) -> dict[str, int]:
        """How many models were analysed from each file, in the order of the report."""
        counts: dict[str, int] = {}
        for m in self.models:
            if m.status == "ok":
                counts[m.path or m.spec] = counts.get(m.path or m.spec, 0) + 1
        return counts

    @property
    def partial(self) -> list[ModelResult]:
        """The analysed models with a forward that could not be traced."""
        return [m for m in self.models if m.status == "ok" and m.opaque]

    @property
    def has_errors(self) -> bool:
        return any(m.status == "error" for m in self.models)

    @property
    def complete(self) -> bool:
        """Whether everything named was checked in full: a rule ran, and every model was
        analysed without an opaque forward, none skipped or failed."""
        return not self.warnings and not self.partial and all(
            m.status == "ok" for m in self.models)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"findings": [f.to_dict() for f in self.findings]}
        if self.fixed is not None:
            data["fixed"] = [f.to_dict() for f in self.fixed]
        data.update(models=[m.to_dict() for m in self.models], warnings=list(self.warnings),
                    summary=self.summary)
        return data


@dataclass(frozen=True)
class Hit:
    """What every rule yields: a finding before it has a place in the user's code (and, for a
    graph rule, a model name). The engine places it, drops it where a comment suppresses it,
    and makes it a ``Finding``.

    ``anchor`` is what the finding points at: for a graph rule, the graph node whose source line
    it is (``module`` and ``related`` are names inside the analysed graph); for a script or run
    rule, the ``files.Site`` in a file. ``edits`` is a script rule's fix: edits of the script.
    """

    code: str
    message: str
    module: str | None
    related: tuple[str, ...]
    anchor: Any
    fix: Safety | None = None
    edits: tuple[Edit, ...] = ()
