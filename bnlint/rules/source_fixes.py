"""What a graph rule declares so that ``--fix`` also writes its fix into the user's source.

A rule module whose fix has a source edit holds ``source_fix``, an instance of a ``SourceFix``
subclass; ``bnlint.sourcefix`` finds it through the registry and asks it two things:

* ``target``: which code a finding's edit changes (a ``Target``): by default the constructor
  call that built the finding's module, or a forward whose calls the edit rewrites, and what
  the edit depends on in that module (``variant``). Findings with the same target make one
  edit, made only when every module that call built (or that runs that forward), in every
  model checked, needs it; where one does not, ``kept`` says what stays right in it.
* ``edits``: the edits of one such group (``sourcefix.Group``), or why there are none, or
  ``Rides``: the fix of another rule at the same place makes this one too.

A rule whose edit depends on what its graph fix made has ``from_fixed``: the fixer runs
``bnlint.fix`` and keeps, for each module it fixed, what ``from_fixed`` reads from the fixed
model; ``fixer.fixed_variants`` holds it by (code, model spec, module name).
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bnlint.edits import Edit, node_at
from bnlint.files import Site


@dataclass(frozen=True)
class Target:
    """Where a finding's edit goes: ``where`` is the constructor call (a ``Site``) or the forward
    function whose calls of the BatchNorm ``attr`` it rewrites; ``None`` when no line of a .py
    file built the module. ``variant`` is what the edit depends on, module by module (one group
    whose modules differ there cannot be edited); ``refused`` why the finding has no edit."""

    where: Site | Callable | None
    attr: str = ""
    variant: Any = None
    refused: str | None = None


@dataclass(frozen=True)
class Rides:
    """No edit of its own: the fix of rule ``code`` at the same place makes this one too.
    ``what`` says how, for the note when that fix is not made."""

    code: str
    what: str


class SourceFix:
    """The source edit of one graph rule's fix. Subclasses set ``kept`` and define ``edits``."""

    # what stays right in a module built by the same call that does not need the fix
    kept: str = ""
    # the same, for a module that runs the same forward, where the edit rewrites a forward
    kept_in_forward: str = ""
    # the edits take parameters away: checkpoints saved before need --convert-checkpoint
    breaks_checkpoints: bool = False
    # (fixed model, module name) -> what the edit of that module depends on, if it depends on
    # what the graph fix made
    from_fixed: Callable[[Any, str], Any] | None = None

    def target(self, fixer, spec: str, model, finding, site: Site | None) -> Target:
        """Where the edit of ``finding`` (in ``model``, named ``spec``) goes; ``site`` is
        where its module was built, if that was recorded."""
        return Target(site)

    def edits(self, fixer, group, path: str, lines: list[str],
              tree: ast.Module) -> list[Edit] | str | Rides:
        """The edits of one group of findings in the file at ``path`` (its ``lines`` and
        ``tree``), or why there are none."""
        raise NotImplementedError


def ast_span(site: Site) -> tuple[int, int, int, int]:
    """A recorded site as ``ast`` reports positions: 1-based lines, 0-based byte columns."""
    return site.line, site.col - 1, site.end_line, site.end_col - 1


def call_at(tree: ast.Module, site: Site) -> ast.Call | None:
    """The call at a recorded site, if the file still has it there."""
    return node_at(tree, ast.Call, *ast_span(site))


MOVED = "the call is no longer where it was when the model was built"


def call_of_one_class(fixer, group, tree: ast.Module, built: str) -> tuple[ast.Call, type] | str:
    """The constructor call a group's edit changes and the one class of ``built`` (``"layers"``,
    ``"BatchNorms"``) it built, or why it cannot be edited."""
    call = call_at(tree, group.where)
    if call is None:
        return MOVED
    types = fixer.built_types(group.where)
    if len(types) > 1:
        return f"the call builds {built} of different classes"
    return call, types.pop()
