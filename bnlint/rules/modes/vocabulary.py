"""What the names in a script mean for the train/eval mode of its models: which calls run
inference, export a module, wrap or copy one, leave its mode alone or show that an object is
a module; and small questions about syntax (is this block a training step, which names does
this function bind) that need no state."""

from __future__ import annotations

import ast
from collections.abc import Callable

NO_GRAD = {"torch.no_grad", "torch.inference_mode", "torch.autograd.no_grad",
           "torch.autograd.grad_mode.no_grad", "torch.autograd.grad_mode.inference_mode"}
ENABLE_GRAD = {"torch.enable_grad", "torch.autograd.enable_grad"}
SET_GRAD = {"torch.set_grad_enabled", "torch.autograd.set_grad_enabled"}
# export and tracing calls, with the keyword that names the module
EXPORTS = {
    "torch.jit.trace": "func", "torch.jit.trace_module": "mod", "torch.jit.script": "obj",
    "torch.onnx.export": "model", "torch.onnx.dynamo_export": "model",
    "torch.export.export": "mod",
}
SCRIPTING = "torch.jit.script"
# calls that return the module they are given, or a wrapper running its layers
WRAPPERS = {"torch.compile", "torch.nn.DataParallel", "torch.nn.parallel.DataParallel",
            "torch.nn.parallel.DistributedDataParallel",
            "torch.nn.SyncBatchNorm.convert_sync_batchnorm"}
# calls that return a copy of the module, in the same mode
COPIES = {"copy.deepcopy", "torch.optim.swa_utils.AveragedModel"}
# functions that take a module and certainly leave its mode alone
HARMLESS = {"print", "len", "str", "repr", "format", "id", "type", "isinstance", "hasattr",
            "getattr", "vars", "dir", "sum", "list", "tuple", "iter", "next", "sorted",
            "enumerate", "zip", "filter", "map", "torch.save", "torch.jit.save"}
# nn.Module methods that leave the mode alone: those returning the module, then the others
KEEPS_MODE = {"to", "cuda", "cpu", "float", "half", "double", "bfloat16", "type",
              "share_memory", "requires_grad_", "to_empty"}
QUERIES = {"parameters", "named_parameters", "buffers", "named_buffers", "children",
           "named_children", "modules", "named_modules", "state_dict", "load_state_dict",
           "zero_grad", "register_forward_hook", "register_forward_pre_hook",
           "register_full_backward_hook", "register_buffer", "register_parameter",
           "add_module", "get_submodule", "get_parameter", "get_buffer", "compile",
           "extra_repr", "register_module", "save"}
# calls on an object that show it is a torch module
MODULE_EVIDENCE = {"load_state_dict", "parameters", "named_parameters", "state_dict",
                   "modules", "named_modules", "children", "named_children", "zero_grad",
                   "requires_grad_", "eval", "train", "cuda", "half", "bfloat16"}
PARTS = {"modules", "children", "named_modules", "named_children"}
PARAMETERS = {"parameters", "named_parameters"}
GRAD = "torch.autograd.grad"
# torchvision model builders whose models hold BatchNorm (unless given another norm_layer);
# detection models are left out: with pretrained weights their backbones use
# FrozenBatchNorm2d
TORCHVISION_BATCHNORM = ("resnet", "resnext", "wide_resnet", "mobilenet", "efficientnet",
                         "densenet", "inception", "googlenet", "mnasnet", "shufflenet",
                         "regnet", "deeplabv3", "fcn_", "lraspp")
SWITCHES = ("eval", "train")
# torch.nn containers: they hold BatchNorm if one of the layers given to them does
CONTAINERS = {"Sequential", "ModuleList", "ModuleDict"}
MODEL_BASES = {"torch.nn.Module", "pytorch_lightning.LightningModule",
               "lightning.LightningModule", "lightning.pytorch.LightningModule"}


def dotted(node: ast.AST) -> str | None:
    """``a.b.c`` for a name or a chain of attributes, else None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def import_names(tree: ast.Module) -> dict[str, str]:
    """Local name -> the dotted name it was imported as (``nn`` -> ``torch.nn``); a relative
    import keeps its leading dots (``from .engine import fit`` -> ``.engine.fit``)."""
    names: dict[str, str] = {}
    for node in statements(tree.body):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    names[alias.asname] = alias.name
                else:
                    root = alias.name.split(".")[0]
                    names[root] = root
        elif isinstance(node, ast.ImportFrom) and (node.module or node.level):
            base = "." * node.level + (node.module or "")
            joiner = "" if base.endswith(".") else "."
            for alias in node.names:
                if alias.name != "*":
                    names[alias.asname or alias.name] = f"{base}{joiner}{alias.name}"
    return names


def statements(body: list[ast.stmt]):
    """Every statement of a block and of the blocks nested in it (not expressions), in the
    order of the source."""
    todo = list(reversed(body))
    while todo:
        node = todo.pop()
        yield node
        for field in ("cases", "finalbody", "handlers", "orelse", "body"):
            todo.extend(reversed(getattr(node, field, ())))


def is_module_base(name: str) -> bool:
    """A base class that makes a class an ``nn.Module``."""
    return name in MODEL_BASES or name.startswith("torch.nn.") and name[9:10].isupper()


def _is_backward(node: ast.AST) -> bool:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "backward")


BLOCKS = (ast.For, ast.AsyncFor, ast.While, ast.FunctionDef, ast.AsyncFunctionDef)


def backward_blocks(tree: ast.Module) -> set[int]:
    """The ids of the blocks (the module, a loop, a function) whose own body, not a loop or
    function nested in it, runs a backward pass."""
    found: set[int] = set()
    todo: list[tuple[ast.AST, ast.AST]] = [(stmt, tree) for stmt in tree.body]
    while todo:
        node, block = todo.pop()
        if isinstance(node, BLOCKS):
            todo.extend((stmt, node) for stmt in node.body)
            continue
        if isinstance(node, (ast.ClassDef, ast.Lambda)):
            block = node  # not a block: a backward pass here makes none a training step
        elif _is_backward(node):
            found.add(id(block))
        todo.extend((child, block) for child in ast.iter_child_nodes(node))
    return found


def assigned_names(func: ast.AST) -> set[str]:
    """The names a function binds (its locals), as Python decides them."""
    names = {a.arg for a in ast.walk(func.args) if isinstance(a, ast.arg)}
    todo = list(func.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            continue
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp,
                               ast.GeneratorExp)):
            continue
        todo.extend(ast.iter_child_nodes(node))
    return names - declared_names(func, (ast.Global, ast.Nonlocal))


def declared_names(func: ast.AST, kinds=(ast.Global,)) -> set[str]:
    """The names a function declares ``global`` (or ``nonlocal`` too, with ``kinds``)."""
    return {n for node in statements(func.body) if isinstance(node, kinds) for n in node.names}


def parameters(func: ast.AST) -> list[ast.arg]:
    """The parameters a call's positional arguments fill, in order."""
    return [*func.args.posonlyargs, *func.args.args]


def switches_mode(node: ast.AST) -> bool:
    """Whether code may switch the mode of some module (``.eval()``, ``.train()``,
    ``x.training = ...``)."""
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
               and n.func.attr in SWITCHES
               or isinstance(n, ast.Attribute) and n.attr == "training"
               and isinstance(n.ctx, ast.Store) for n in ast.walk(node))


Qualname = Callable[[ast.AST], "str | None"]


def may_hold_batchnorm(node: ast.AST, qualname: Qualname) -> bool:
    """Whether a ``torch.nn`` layer, or a container of the layers written out in its call,
    may be or hold BatchNorm (anything not written out may)."""
    if isinstance(node, (ast.List, ast.Tuple)):
        return any(may_hold_batchnorm(e, qualname) for e in node.elts)
    if isinstance(node, ast.Dict):
        return any(may_hold_batchnorm(v, qualname) for v in node.values)
    name = qualname(node.func) if isinstance(node, ast.Call) else None
    if name is None or not name.startswith("torch.nn."):
        return True
    last = name.rsplit(".", 1)[-1]
    if "BatchNorm" in last:
        return True
    if last in CONTAINERS:
        parts = [*node.args, *(k.value for k in node.keywords)]
        return any(may_hold_batchnorm(p, qualname) for p in parts)
    return False


def builds_model(name: str, node: ast.Call, qualname: Qualname) -> bool | None:
    """Whether a call of a library builds a module that may hold BatchNorm: True (surely),
    False (a class that may be one, confirmed once the script uses it as a module), None
    (not)."""
    last = name.rsplit(".", 1)[-1]
    if name.startswith("torch.nn."):
        return True if may_hold_batchnorm(node, qualname) else None
    if name.startswith("torchvision.models."):
        lowered = name.lower()
        return None if "weight" in lowered or "list_models" in lowered else True
    if name == "timm.create_model":
        return True
    if last[:1].isupper() and "." in name and not name.startswith(("torch.", "torchvision.")):
        return False
    return None


def library_batchnorm(name: str, node: ast.Call) -> bool | None:
    """Whether a call of a library surely builds a module holding BatchNorm: True, or None
    (maybe; BatchNorm inside a ``torch.nn`` container is found from its layers)."""
    last = name.rsplit(".", 1)[-1]
    if name.startswith("torch.nn.") and "BatchNorm" in last:
        return True
    if (name.startswith("torchvision.models.") and ".detection." not in name
            and ".quantization." not in name
            and not any(k.arg == "norm_layer" for k in node.keywords)):
        lowered = last.lower()
        if lowered.startswith(TORCHVISION_BATCHNORM) or (
                lowered.startswith("vgg") and lowered.endswith("_bn")):
            return True
    return None


def _loop_variables(target: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}


def parameter_loop(node: ast.For) -> tuple[list[ast.AST], list[tuple[ast.AST | None, bool]],
                                             bool]:
    """What a loop over modules' parameters does to them, by its syntax: the modules
    iterated (``X`` of ``X.parameters()`` or ``X.named_parameters()``, also inside
    ``zip(...)``); each ``requires_grad`` it gives a loop variable (the value, None for
    ``requires_grad_()``; and whether the loop's own body does it, not a branch or an inner
    loop); whether it writes the parameters themselves (``p.data = ...``, ``p.mul_(...)``)."""
    iterated = node.iter.args if (isinstance(node.iter, ast.Call) and isinstance(
        node.iter.func, ast.Name) and node.iter.func.id == "zip") else [node.iter]
    owners = [it.func.value for it in iterated if isinstance(it, ast.Call)
              and isinstance(it.func, ast.Attribute) and it.func.attr in PARAMETERS]
    if not owners:
        return [], [], False
    names = _loop_variables(node.target)
    top = {id(stmt) for stmt in node.body}

    def on_variable(expr: ast.AST) -> bool:
        while isinstance(expr, ast.Attribute):
            expr = expr.value
        return isinstance(expr, ast.Name) and expr.id in names

    settings: list[tuple[ast.AST | None, bool]] = []
    written = False
    for stmt in statements(node.body):
        if isinstance(stmt, ast.Assign):
            for target in stmt.targets:
                if isinstance(target, ast.Attribute) and on_variable(target.value):
                    if target.attr == "requires_grad":
                        settings.append((stmt.value, id(stmt) in top))
                    elif target.attr == "data":
                        written = True
        for call in ast.walk(stmt) if not isinstance(stmt, BLOCKS + (ast.If, ast.With)) \
                else ():
            if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                    and on_variable(call.func.value)):
                continue
            if call.func.attr == "requires_grad_":
                value = call.args[0] if call.args else next(
                    (k.value for k in call.keywords if k.arg == "requires_grad"), None)
                settings.append((value, id(stmt) in top))
            elif call.func.attr.endswith("_") and not call.func.attr.startswith("_"):
                written = True
    return owners, settings, written


def exports_in_eval_anyway(node: ast.Call, name: str, qualname: Qualname) -> bool:
    """ONNX export asked for training mode explicitly, or by the TorchScript exporter
    (``dynamo=False``), which switches to eval mode by itself."""
    if name != "torch.onnx.export":
        return False
    keywords = {k.arg: k.value for k in node.keywords}
    if "training" in keywords:
        return (qualname(keywords["training"]) or "").endswith(".TRAINING")
    dynamo = keywords.get("dynamo")
    return isinstance(dynamo, ast.Constant) and dynamo.value is False
