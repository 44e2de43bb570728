"""Example inputs: what a model's forward is called with when bnlint has to run it (to record
shapes, to trace what torch.fx cannot follow, or to benchmark it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Example:
    """The arguments of one forward call, and where they came from (``from --example``,
    ``from example_input()``, ``from --input-shape``, ``from INPUT_SHAPE``, ``found by probing``)."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    origin: str = "given"
