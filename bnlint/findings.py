"""The plain data that flows out of every stage: findings, per-model results, the report."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SAFE = "safe"
UNSAFE = "unsafe"


@dataclass(frozen=True)
class Finding:
    """One problem, at one place in the user's code.

    ``module`` is the qualified name of the module a fix touches (if any), ``related`` the other
    modules or functions involved, in dataflow order. ``fix`` is ``None`` when bnlint cannot fix
    it, ``"safe"`` when the fixed model computes the same function, ``"unsafe"`` when the fix
    changes the function and the model needs retraining. In a notebook, ``cell`` is the
    cell's number (from 1, every cell counted) and ``line`` the line in that cell.
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
    fix: str | None = None
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
        }


@dataclass
class ModelResult:
    """What happened to one model spec: analysed (fully or in part), skipped, or failed."""

    spec: str
    status: str  # "ok" | "skipped" | "error"
    reason: str | None = None
    trace: str | None = None  # "full" | "partial" | None when nothing was traced
    opaque: list[str] = field(default_factory=list)
    detail: str | None = None  # the traceback behind an error, shown with --verbose

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "status": self.status,
            "reason": self.reason,
            "trace": self.trace,
            "opaque": list(self.opaque),
        }


@dataclass
class Report:
    """The result of a lint run: findings plus what happened to every model."""

    findings: list[Finding] = field(default_factory=list)
    models: list[ModelResult] = field(default_factory=list)

    @property
    def summary(self) -> dict[str, Any]:
        by_code: dict[str, int] = {}
        for f in self.findings:
            by_code[f.code] = by_code.get(f.code, 0) + 1
        statuses = [m.status for m in self.models]
        return {
            "findings": len(self.findings),
            "by_code": dict(sorted(by_code.items())),
            "fixable": sum(f.fix == SAFE for f in self.findings),
            "unsafe_fixable": sum(f.fix == UNSAFE for f in self.findings),
            "models_analysed": statuses.count("ok"),
            "models_skipped": statuses.count("skipped"),
            "models_failed": statuses.count("error"),
        }

    @property
    def has_errors(self) -> bool:
        return any(m.status == "error" for m in self.models)

    def to_dict(self) -> dict[str, Any]:
        return {
            "findings": [f.to_dict() for f in self.findings],
            "models": [m.to_dict() for m in self.models],
            "summary": self.summary,
        }


@dataclass(frozen=True)
class Hit:
    """What a graph rule yields: a finding before it has a model name and a source location.

    ``module`` and ``related`` are names inside the analysed graph; ``anchor`` is the graph
    node whose source line the finding points at.
    """

    code: str
    message: str
    module: str | None
    related: tuple[str, ...]
    anchor: Any
    fix: str | None = None
