"""BN007: a BatchNorm whose momentum looks like Keras's (above 0.5).

PyTorch's ``momentum`` is the weight of each new batch in the running statistics (default 0.1);
Keras and TensorFlow call momentum the weight of the old average (default 0.99). A value copied
across makes the running statistics little more than those of the last batch.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Iterator

from torch import fx
from torch.nn.modules.batchnorm import _BatchNorm

from bnlint import graph
from bnlint.edits import Edit, span_of
from bnlint.findings import Hit
from bnlint.rules import Safety
from bnlint.rules.source_fixes import SourceFix, Target, call_of_one_class

CODE = "BN007"
# the fix changes module state (the momentum), never the graph
STATE_ONLY = True
KERAS_EPS = 1e-3  # Keras's default epsilon; PyTorch's is 1e-5


def is_keras_style(momentum) -> bool:
    """Above 0.5 and below 1. Exactly 1 keeps the last batch's statistics, a deliberate choice
    (and one Keras cannot mean: there it would freeze the average); ``None`` is a cumulative
    average."""
    return isinstance(momentum, (int, float)) and 0.5 < momentum < 1


def converted(momentum: float) -> float:
    """PyTorch's momentum for a Keras one, without float noise: 0.99 -> 0.01."""
    return float(f"{1 - momentum:.12g}")


def check(gm: fx.GraphModule, prefix: str = "") -> Iterator[Hit]:
    """Hits in one traced piece; ``prefix`` is its qualified name in the whole model. Only
    BatchNorms the forward calls: one it never calls keeps no statistics at all."""
    reported: set[str] = set()
    for node in gm.graph.nodes:
        bn = graph.module_of(gm, node)
        if not isinstance(bn, _BatchNorm) or node.target in reported:
            continue
        if not (bn.track_running_stats and is_keras_style(bn.momentum)):
            continue
        reported.add(node.target)
        new = converted(bn.momentum)
        message = (
            f"{graph.label(gm, node, prefix)} has momentum={bn.momentum:g}: in PyTorch momentum "
            f"is the weight of each new batch in the running statistics (default 0.1), the "
            f"reverse of Keras and TensorFlow, so the statistics used in eval mode are in effect "
            f"those of the last few batches. Use momentum={new:g} (1 - {bn.momentum:g})."
        )
        if abs(bn.eps - KERAS_EPS) < 1e-12:
            message += (" Its eps=1e-3 is Keras's default too; it is a sound value in PyTorch "
                        "(weights ported from TensorFlow expect it), so the fix keeps it.")
        yield Hit(code=CODE, message=message, module=graph.describe(gm, node, prefix),
                  related=(), anchor=node, fix=Safety.UNSAFE)


def fix(gm: fx.GraphModule, hit: Hit) -> str | None:
    """Set the BatchNorm's momentum to ``1 - momentum``. The outputs do not change, the
    running statistics of later training steps do (hence unsafe)."""
    bn = gm.get_submodule(hit.anchor.target)
    if is_keras_style(bn.momentum):
        bn.momentum = converted(bn.momentum)
    return None


# --- the source fix ----------------------------------------------------------------------------

def parameter_position(factory, name: str) -> tuple[bool, int | None]:
    """Whether ``factory`` (a class or function) takes the argument ``name``, and its position
    if it may be passed by position."""
    try:
        parameters = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):
        return False, None
    positional = [p.name for p in parameters if p.kind in (
        inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    if name in positional:
        return True, positional.index(name)
    return any(p.name == name for p in parameters), None


def _number(node: ast.expr) -> float | None:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return float(node.value)
    return None


def source_edit(path: str, lines: list[str], call: ast.Call, bn_type: type,
                momentum: float) -> Edit | str:
    """The edit that makes the constructor call ``call``, which built ``bn_type`` modules with
    ``momentum``, pass ``1 - momentum`` instead: its ``momentum`` argument, keyword or
    positional, must be that number written out. Or why the call cannot be edited."""
    argument = next((k.value for k in call.keywords if k.arg == "momentum"), None)
    if argument is None:
        takes, index = parameter_position(bn_type, "momentum")
        starred = any(isinstance(a, ast.Starred) for a in call.args)
        if takes and index is not None and index < len(call.args) and not starred:
            argument = call.args[index]
    if argument is None:
        return (f"the call passes no `momentum` argument (it comes from **kwargs, a default or "
                f"an assignment elsewhere); set it to {converted(momentum):g} where it is chosen")
    written = _number(argument)
    if written is None:
        source = ast.get_source_segment("".join(lines), argument) or "an expression"
        return (f"the call passes `momentum={source}`, not a number; set it to "
                f"{converted(momentum):g} where it is chosen")
    if abs(written - momentum) > 1e-12:
        return (f"the call passes momentum={written:g}, but the module has {momentum:g}, set "
                "after it was built")
    return Edit(path, *span_of(argument, lines), f"{converted(momentum):g}", CODE, Safety.UNSAFE,
                "PyTorch momentum (1 - the Keras value)")


class _SourceFix(SourceFix):
    """The ``momentum`` number of the call that built the BatchNorm becomes ``1 - momentum``."""

    kept = "its momentum is right"

    def target(self, fixer, spec, model, finding, site):
        return Target(site, variant=model.get_submodule(finding.module).momentum)

    def edits(self, fixer, group, path, lines, tree):
        found = call_of_one_class(fixer, group, tree, "BatchNorms")
        if isinstance(found, str):
            return found
        if len(group.variants) != 1:
            values = ", ".join(f"{m:g}" for m in sorted(group.variants))
            return (f"the BatchNorms the call builds end up with different momenta ({values}): "
                    "some are set after they are built")
        edit = source_edit(path, lines, *found, next(iter(group.variants)))
        return edit if isinstance(edit, str) else [edit]


source_fix = _SourceFix()
