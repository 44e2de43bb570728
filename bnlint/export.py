"""A fixed model -> a new folder the user can import: ``__init__.py`` holds the model as plain
PyTorch code (each layer as its constructor call, the forward as torch.fx wrote it) and
``weights.pt`` its state_dict. Nothing is pickled, so loading needs neither bnlint nor the
original source, and works with ``torch.load(..., weights_only=True)``.

(``GraphModule.to_folder`` pickles every layer it cannot write as code and hard-codes the
folder's absolute path; this writes code only, and finds its weights next to itself.)
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import textwrap
from pathlib import Path

import torch
from torch import fx, nn

from bnlint.trace import trace_one

# The names fx-generated code may use, and how to import them.
_IMPORTS = {
    "torch": "import torch",
    "inf": "from math import inf",
    "nan": "from math import nan",
    "NoneType": "NoneType = type(None)",
    "device": "from torch import device",
    "fx_pytree": "import torch.fx._pytree as fx_pytree",
    "pytree": "import torch.utils._pytree as pytree",
}

_TEMPLATE = '''\
"""{title}

Written by bnlint{fixes}.
``load()`` returns the model with its weights (weights.pt).
"""

from pathlib import Path

{imports}
from torch import nn


def _add(root, name, value):
    *parents, last = name.split(".")
    for part in parents:
        if part not in root._modules:
            root.add_module(part, nn.Module())
        root = root._modules[part]
    if isinstance(value, nn.Module):
        root.add_module(last, value)
    elif isinstance(value, nn.Parameter):
        root.register_parameter(last, value)
    else:
        root.register_buffer(last, value)


class {name}(nn.Module):
    def __init__(self):
        super().__init__()
{members}

{forward}

def load(map_location=None):
    model = {name}()
    weights = Path(__file__).with_name("weights.pt")
    model.load_state_dict(torch.load(weights, map_location=map_location, weights_only=True))
    return model.train({training})
'''


class ExportError(ValueError):
    """The model cannot be written as code; the message says why, in one line."""


def _layer_code(target: str, module: nn.Module) -> str:
    """``module`` as a constructor call that rebuilds it (same class, settings and shapes)."""
    code = repr(module)
    try:
        rebuilt = eval(code, {"__builtins__": {}}, dict(vars(nn)))  # noqa: S307 - torch's own repr
    except Exception:  # noqa: BLE001 - any repr that is not a valid call
        rebuilt = None
    shapes = {k: v.shape for k, v in module.state_dict().items()}
    if (type(rebuilt) is not type(module) or repr(rebuilt) != code
            or {k: v.shape for k, v in rebuilt.state_dict().items()} != shapes
            or type(module).__module__.split(".")[:2] != ["torch", "nn"]):
        raise ExportError(f"`{target}` ({type(module).__name__}) cannot be written as a "
                          "torch.nn constructor call")
    return f"nn.{code}"


def _members(gm: fx.GraphModule) -> list[str]:
    lines = []
    for node in gm.graph.nodes:
        if node.op == "call_module":
            value = _layer_code(node.target, gm.get_submodule(node.target))
        elif node.op == "get_attr":
            owner, _, attr = node.target.rpartition(".")
            tensor = getattr(gm.get_submodule(owner), attr)
            value = f"torch.empty({list(tensor.shape)}, dtype={tensor.dtype})"
            if isinstance(tensor, nn.Parameter):
                value = f"nn.Parameter({value})"
        else:
            continue
        line = f"        _add(self, {node.target!r}, {value})"
        if line not in lines:
            lines.append(line)
    return lines


def _imports(gm: fx.GraphModule, code: str) -> str:
    names = set(gm.graph.python_code(root_module="self").globals) | {"torch"}
    unknown = sorted(n for n in names - set(_IMPORTS) if re.search(rf"\b{re.escape(n)}\b", code))
    if unknown:
        raise ExportError(f"its forward calls `{unknown[0]}`, which bnlint cannot import in "
                          "the written file")
    used = [n for n in _IMPORTS if n == "torch" or re.search(rf"\b{n}\b", code)]
    return "\n".join(_IMPORTS[n] for n in used)


def write_model(model: nn.Module, folder: Path, *, title: str = "A model fixed by bnlint",
                fixes: list[str] = (), name: str = "FixedModel") -> None:
    """Write ``model`` to the new folder ``folder`` as the class ``name`` (``title`` heads its
    docstring, which lists ``fixes``); never replaces anything that exists. Raises ExportError
    with the reason when the model cannot be written as code."""
    folder = Path(folder)
    if os.path.lexists(folder):
        raise ExportError(f"{folder} already exists; not overwriting it")
    if isinstance(model, fx.GraphModule):
        gm = model
    else:
        try:
            gm = trace_one(model)
        except Exception as exc:  # noqa: BLE001 - whatever stops tracing the user's forward
            raise ExportError("its forward cannot be traced as one graph "
                              f"({type(exc).__name__})") from None
    forward = "\n".join(f"    {line}".rstrip() for line in gm.code.strip("\n").splitlines())
    applied = textwrap.indent(textwrap.fill(", ".join(fixes), 88), "    ")
    text = _TEMPLATE.format(
        title=title,
        fixes=f", which applied:\n{applied}" if fixes else "",
        imports=_imports(gm, gm.code),
        name=name,
        members="\n".join(_members(gm)) or "        pass",
        forward=forward,
        training=gm.training,
    )
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        (staging / "__init__.py").write_text(text, encoding="utf-8")
        torch.save(gm.state_dict(), staging / "weights.pt")
        os.rename(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
