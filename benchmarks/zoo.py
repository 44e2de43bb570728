"""How much of the torchvision and timm model zoos bnlint can analyse, and what it finds there.

Builds every torchvision classification, detection and segmentation model (up to MAX_PARAMS)
and one or two models of every timm family (up to TIMM_MAX_PARAMS), with random weights:
nothing is downloaded. Runs ``bnlint.check`` on each and prints, per model, how it was traced
(full / branches / dynamic / partial), which modules the run on the example recorded or that
stayed opaque, how many of a partly analysed model's BatchNorms sit in a traced graph, the
findings by code and any error; then the coverage figures, a precision check on well-known
architectures whose correct answer is known, and a cross-check against what running each
model once shows (which BatchNorms receive a biased layer's or an activation's output
directly).

A model whose forward torch.fx cannot follow all the way is given an example input, as a user
gives one with ``--example`` or ``--input-shape``: two images of the model's input size (224 x
224, or the timm model's ``pretrained_cfg``: BatchNorm in training mode needs two samples);
a detection model, in training mode as built, also gets their targets (a box, a label, a mask
and keypoints each).

Needs torchvision and timm, which bnlint itself does not; not part of the test suite::

    python benchmarks/zoo.py > zoo.txt              # the whole run
    python benchmarks/zoo.py resnet50 vgg11_bn      # only these (torchvision or timm names)
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import signal
import sys
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never fetch weights or configs

import timm  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.modules.batchnorm import _BatchNorm  # noqa: E402
from torchvision import models as tvm  # noqa: E402

import bnlint  # noqa: E402
from bnlint.engine import analyse, merge  # noqa: E402
from bnlint.graph import ACTIVATION_TYPES, BIASED_LAYER_TYPES  # noqa: E402
from bnlint.inputs import BATCH, Example, from_shape  # noqa: E402
from bnlint.rules import enabled_codes  # noqa: E402
from bnlint.source import recording  # noqa: E402
from bnlint.trace import trace_model  # noqa: E402

TORCHVISION_TASKS = {
    "classification": tvm,
    "detection": tvm.detection,
    "segmentation": tvm.segmentation,
}
# Models above this many parameters are skipped: they take long to build and add nothing
# that their smaller siblings do not show.
MAX_PARAMS = 150_000_000
# timm has many large variants of each family; its sample keeps to smaller ones.
TIMM_MAX_PARAMS = 60_000_000
# Names that mark a large variant; the timm sample avoids them.
LARGE = re.compile(r"large|huge|giant|gigantic|enormous|xxl|xlarge|_xl|_e\d|_l\d|_h\d|_g\d|"
                   r"so400m|_\d+b_|448|512|384|_l_|_h_|_g_|_e_|_big")
# timm models always included (beside the family sample) because the precision check uses them.
TIMM_ALWAYS = ["resnet50", "efficientnet_b0", "mobilenetv3_large_100", "regnety_008",
               "densenet121", "convnext_atto", "vgg11_bn", "convmixer_768_32"]
# One sample's shape, for the models that do not give theirs (torchvision's): an ImageNet image.
IMAGE_SHAPE = (3, 224, 224)
# Detection models scale every image to 800 pixels or more before their backbone; at ImageNet
# size instead, running one on the CPU takes a fraction of the time, and no layer changes.
DETECTION_SIZE = {"min_size": IMAGE_SHAPE[1], "max_size": IMAGE_SHAPE[2]}
# Where the example inputs come from, as bnlint's reports say it.
ORIGIN = "from benchmarks/zoo.py"


@dataclass
class Expect:
    """The correct answer for a well-known architecture: the number of findings per code."""

    counts: dict[str, int]
    why: str


EXPECTED = {
    ("torchvision", "resnet18"): Expect({"BN001": 0, "BN002": 0}, "conv(bias=False) -> BN -> ReLU"),
    ("torchvision", "resnet50"): Expect({"BN001": 0, "BN002": 0}, "bottlenecks, bias=False"),
    ("torchvision", "vgg11_bn"): Expect({"BN001": 8, "BN002": 0},
                                        "all 8 convs keep bias=True and feed BatchNorm2d"),
    ("torchvision", "vgg16_bn"): Expect({"BN001": 13, "BN002": 0}, "13 biased convs -> BN"),
    ("torchvision", "densenet121"): Expect({"BN001": 0, "BN002": 0},
                                           "pre-activation BN -> ReLU -> conv must stay silent"),
    ("torchvision", "mobilenet_v2"): Expect({"BN001": 0, "BN002": 0}, "Conv2dNormActivation"),
    ("torchvision", "mobilenet_v3_large"): Expect({"BN001": 0, "BN002": 0},
                                                  "SE convs keep bias but feed no BN"),
    ("torchvision", "efficientnet_b0"): Expect({"BN001": 0, "BN002": 0}, "MBConv + SE"),
    ("torchvision", "convnext_tiny"): Expect({"BN001": 0, "BN002": 0}, "LayerNorm only"),
    ("torchvision", "regnet_y_400mf"): Expect({"BN001": 0, "BN002": 0}, "bias=False + SE"),
    ("timm", "resnet50"): Expect({"BN001": 0, "BN002": 0}, "plain BatchNorm2d"),
    ("timm", "efficientnet_b0"): Expect({"BN001": 0, "BN002": 0},
                                        "BatchNormAct2d (activation after normalising)"),
    ("timm", "mobilenetv3_large_100"): Expect({"BN001": 0, "BN002": 0}, "BatchNormAct2d"),
    ("timm", "regnety_008"): Expect({"BN001": 0, "BN002": 0}, "ConvNormAct"),
    ("timm", "densenet121"): Expect({"BN001": 0, "BN002": 0}, "pre-activation, BatchNormAct2d"),
    ("timm", "vgg11_bn"): Expect({"BN001": 8, "BN002": 0},
                                 "timm's vgg11_bn: biased convs -> BN, as torchvision's"),
    ("timm", "convmixer_768_32"): Expect({"BN001": 0, "BN002": 65},
                                         "conv -> act -> BN by design: stem + 2 per block"),
}


@dataclass
class Row:
    source: str
    task: str
    name: str
    trace: str = "-"  # full / branches / dynamic / partial
    opaque: dict[str, str] = field(default_factory=dict)  # name -> "Type: reason"
    recorded: dict[str, str] = field(default_factory=dict)  # name -> type, seen by the run
    findings: list = field(default_factory=list)  # one per offending layer or call
    bn_total: int = 0
    bn_seen: int | None = None  # counted where the model stays partly analysed
    example: str | None = None  # the input given, where fx needed one
    note: str | None = None  # why the run on the example failed, where the model is not partial
    error: str | None = None
    skipped: str | None = None
    seconds: float = 0.0
    # from running the model once: biased layer -> BN and activation -> BN edges, by name
    ran: dict[str, set] | None = None
    ran_error: str | None = None

    @property
    def outcome(self) -> str:
        if self.skipped:
            return "skipped"
        if self.error:
            return "failed"
        return "partly" if self.trace == "partial" else "fully"

    def counts(self) -> Counter:
        return Counter(f.code for f in self.findings)


class Timeout(Exception):
    pass


def _alarm(_signum, _frame):
    raise Timeout("took too long")


# --- choosing the models ---------------------------------------------------------------------

def torchvision_models() -> list[tuple[str, str, object]]:
    chosen = []
    for task, module in TORCHVISION_TASKS.items():
        for name in tvm.list_models(module=module):
            chosen.append((task, name, lambda name=name, task=task: _build_torchvision(name, task)))
    return chosen


def _build_torchvision(name: str, task: str) -> nn.Module:
    kwargs = {"weights": None}
    if task != "classification":
        kwargs["weights_backbone"] = None
    if task == "detection" and not name.startswith("ssd"):  # SSD's builders fix the size
        kwargs.update(DETECTION_SIZE)
    return tvm.get_model(name, **kwargs)


def timm_models(per_family: int) -> tuple[list[tuple[str, str, object]], list[str]]:
    """Per timm family (its defining module): the first model, and one from the middle of its
    list, each of at most TIMM_MAX_PARAMS parameters (the next one along where it is larger);
    plus the models the precision check needs. Also the families left out for size."""
    names: list[str] = []
    left_out: list[str] = []
    for family in timm.list_modules():
        before = len(names)
        members = [n for n in timm.list_models(module=family) if not LARGE.search(n)]
        starts = [0, len(members) // 2][:per_family] if len(members) > 2 else [0]
        for start in starts:
            fits = (n for n in members[start:start + 5]
                    if n not in names and (_params_on_meta(lambda n=n: timm.create_model(n))
                                           or 0) <= TIMM_MAX_PARAMS)
            names += [n for n in [next(fits, None)] if n]
        if len(names) == before:
            left_out.append(family)
    names += [n for n in TIMM_ALWAYS if n not in names]
    build = [("classification", n, lambda n=n: timm.create_model(n, pretrained=False))
             for n in names]
    return build, left_out


def _params_on_meta(build) -> int | None:
    """The parameter count of a model built on the meta device (no memory, no init), or
    ``None`` where the constructor does not support that."""
    try:
        with torch.device("meta"):
            model = build()
        return sum(p.numel() for p in model.parameters())
    except Exception:  # noqa: BLE001 - only a size estimate
        return None


# --- running one model ---------------------------------------------------------------------

def run_one(source: str, task: str, name: str, build, timeout: int, cross_check: bool) -> Row:
    row = Row(source, task, name)
    start = time.perf_counter()
    params = _params_on_meta(build)
    if params is not None and params > MAX_PARAMS:
        row.skipped = f"{params / 1e6:.0f}M parameters"
        return row
    signal.alarm(timeout)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                with recording():
                    model = build()
            except Timeout:
                raise
            except Exception as exc:  # noqa: BLE001
                row.skipped = f"does not build: {type(exc).__name__}: {str(exc)[:100]}"
                return row
            try:
                # what bnlint.check does, with the findings kept per layer before merging,
                # given an example where fx leaves a forward opaque
                traced = trace_model(model)
                example = example_input(model, task) if traced.opaque else None
                findings, result = analyse(model, name, enabled_codes(), example)
                if example is not None and result.trace == "partial":
                    traced = trace_model(model, example)  # what stays opaque, and why
            except Timeout:
                raise
            except Exception as exc:  # noqa: BLE001 - that is what we measure
                row.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
                return row
            if cross_check:
                try:
                    row.ran = edges_when_run(model, task)
                except Timeout:
                    raise
                except Exception as exc:  # noqa: BLE001
                    row.ran_error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:100]}"
    except Timeout:
        row.error = f"timed out after {timeout} s"
        return row
    finally:
        signal.alarm(0)
        row.seconds = time.perf_counter() - start
    row.trace = result.trace
    row.findings = findings
    row.example = example.describe() if example is not None else None
    row.recorded = {n: type(model.get_submodule(n)).__name__
                    for n in result.traced_by.get("dynamic", [])}
    row.bn_total = sum(isinstance(m, _BatchNorm) for m in model.modules())
    if result.trace == "partial":
        row.opaque = {n: f"{type(model.get_submodule(n)).__name__}: {why}"
                      for n, why in traced.opaque.items()}
        row.bn_seen = _bn_seen(model, traced)
    else:
        row.note = result.reason
    return row


def example_input(model: nn.Module, task: str) -> Example:
    """What the model's forward is called with: a batch of images of its input size; for a
    detection model (in training mode, as built), the images and their targets."""
    shape = tuple(getattr(model, "pretrained_cfg", {}).get("input_size", IMAGE_SHAPE))
    if task != "detection":
        return from_shape(shape, ORIGIN)
    left, top, right, bottom = 30, 40, 130, 160

    def target() -> dict[str, torch.Tensor]:
        """One object: its box, label, mask and 17 visible keypoints (all that the detection
        models here train on)."""
        mask = torch.zeros(1, *shape[1:], dtype=torch.uint8)
        mask[:, top:bottom, left:right] = 1
        return {
            "boxes": torch.tensor([[left, top, right, bottom]], dtype=torch.float32),
            "labels": torch.tensor([1]),
            "masks": mask,
            "keypoints": torch.tensor([[[left + 5 * k, top + 6 * k, 2] for k in range(17)]],
                                      dtype=torch.float32),
        }

    return Example(([torch.rand(shape) for _ in range(BATCH)], [target() for _ in range(BATCH)]),
                   {}, ORIGIN)


def _bn_seen(model: nn.Module, traced) -> int:
    """How many of the model's BatchNorm layers sit in some traced graph (the others are
    inside an opaque module's own forward, where their inputs are not seen)."""
    names = {n for n, m in model.named_modules() if isinstance(m, _BatchNorm)}
    seen = set()
    for unit in traced.units:
        for node in unit.gm.graph.nodes:
            if node.op == "call_module":
                seen.add(f"{unit.prefix}.{node.target}" if unit.prefix else node.target)
    return len(names & seen)


def edges_when_run(model: nn.Module, task: str) -> dict[str, set]:
    """An independent answer to compare with bnlint's: run the model once (eval mode, no grad;
    the model is thrown away afterwards) and record which BatchNorms receive a tensor straight
    from a biased conv/linear module (BN001, keyed by the layer) or from an activation module
    (BN002, keyed by the BatchNorm)."""
    writer: dict[int, tuple[str, str, torch.Tensor]] = {}  # id(tensor) -> last module to write it
    edges: dict[str, set] = {"BN001": set(), "BN002": set()}
    handles = []

    def kind_of(module: nn.Module) -> str:
        if isinstance(module, BIASED_LAYER_TYPES) and getattr(module, "bias", None) is not None:
            return "biased"
        if isinstance(module, ACTIVATION_TYPES):
            return "activation"
        return "other"

    def record(name, kind):
        def hook(_module, _args, output):
            if isinstance(output, torch.Tensor):
                writer[id(output)] = (name, kind, output)
        return hook

    def before_bn(name):
        def hook(_module, args):
            if args and isinstance(args[0], torch.Tensor) and id(args[0]) in writer:
                source, kind, tensor = writer[id(args[0])]
                if tensor is args[0] and kind == "biased":
                    edges["BN001"].add(source)
                elif tensor is args[0] and kind == "activation":
                    edges["BN002"].add(name)
        return hook

    for name, module in model.named_modules():
        if isinstance(module, _BatchNorm):
            handles.append(module.register_forward_pre_hook(before_bn(name)))
        if isinstance(module, (_BatchNorm, *BIASED_LAYER_TYPES, *ACTIVATION_TYPES)) or not any(
                True for _ in module.children()):
            handles.append(module.register_forward_hook(record(name, kind_of(module))))
    # a small image first (most convnets take any size); the model's own size if it refuses
    sizes = [(3, 64, 64), getattr(model, "pretrained_cfg", {}).get("input_size", (3, 224, 224))]
    try:
        model.eval()
        for attempt, size in enumerate(sizes):
            image = torch.rand(1, *size)
            try:
                with torch.no_grad():
                    model([image[0]]) if task == "detection" else model(image)
                break
            except Exception:
                if attempt == len(sizes) - 1:
                    raise
                writer.clear()
                for found in edges.values():
                    found.clear()
    finally:
        for handle in handles:
            handle.remove()
    return edges


# --- printing ------------------------------------------------------------------------------

def _short_reason(reason: str) -> str:
    type_name, _, why = reason.partition(": ")
    why = re.sub(r"^torch\.fx\.proxy\.TraceError: |^\w+(\.\w+)*Error: ", "", why)
    return f"{type_name}: {why[:90]}"


def _names(modules: dict[str, str]) -> str:
    """``<model> (FasterRCNN), rpn (RegionProposalNetwork)``: modules by name, with their type."""
    return ", ".join(f"{n or '<model>'} ({v.split(':')[0]})" for n, v in modules.items())


def print_table(rows: list[Row]) -> None:
    print(f"{'source':<11} {'task':<14} {'model':<40} {'trace':<8} {'BN':>9} "
          f"{'BN001':>5} {'BN002':>5} {'s':>5}  opaque / recorded by the run / error")
    for r in rows:
        counts = r.counts()
        bn = "-" if r.error or r.skipped else (
            f"{r.bn_seen}/{r.bn_total}" if r.bn_seen is not None else str(r.bn_total))
        note = r.error or (f"skipped: {r.skipped}" if r.skipped else "")
        if r.opaque:
            note = f"opaque: {_names(r.opaque)}"
        elif r.recorded:
            note = f"recorded: {_names(r.recorded)}"
        if r.note:
            note = f"{note}; {r.note}"
        print(f"{r.source:<11} {r.task:<14} {r.name:<40} {r.trace:<8} {bn:>9} "
              f"{counts.get('BN001', 0):>5} {counts.get('BN002', 0):>5} {r.seconds:>5.1f}  {note[:140]}")


def print_summary(rows: list[Row]) -> None:
    print("\n== Coverage (full: fx; branches: fx down both sides of a data-dependent if; dynamic: "
          "the rest recorded by running the example) ==")
    for source in ("torchvision", "timm"):
        mine = [r for r in rows if r.source == source]
        if not mine:
            continue
        outcome = Counter(r.outcome for r in mine)
        trace = Counter(r.trace for r in mine if r.outcome in ("fully", "partly"))
        print(f"{source}: {len(mine) - outcome['skipped']} architectures: {trace['full']} full, "
              f"{trace['branches']} branches, {trace['dynamic']} dynamic, {trace['partial']} "
              f"partial, {outcome['failed']} failed ({outcome['skipped']} skipped; "
              f"{sum(r.example is not None for r in mine)} given an example)")
        partly = [r for r in mine if r.outcome == "partly"]
        if partly:
            bn_total = sum(r.bn_total for r in partly)
            bn_seen = sum(r.bn_seen for r in partly)
            print(f"  in the partly analysed ones, {bn_seen} of {bn_total} BatchNorm layers sit "
                  f"in a traced graph")
        for r in mine:
            if r.skipped:
                print(f"  skipped {r.name}: {r.skipped}")
            if r.error:
                print(f"  failed {r.name}: {r.error}")
            if r.opaque:
                print(f"  partial {r.name}, given {r.example}: {_names(r.opaque)}")
            if r.note:
                print(f"  {r.trace} {r.name}, given {r.example}: {r.note}")
    recorded = Counter(t for r in rows for t in r.recorded.values())
    if recorded:
        print("\n== What the run on the example recorded (module type, how many modules) ==")
        for type_name, n in recorded.most_common():
            print(f"  {n:>4}  {type_name}")
    reasons = Counter(_short_reason(v) for r in rows for v in r.opaque.values())
    if reasons:
        print("\n== What stays opaque (module type: reason, how many modules) ==")
        for reason, n in reasons.most_common():
            print(f"  {n:>4}  {reason}")


def print_precision(rows: list[Row]) -> None:
    print("\n== Precision on well-known architectures ==")
    by_key = {(r.source, r.name): r for r in rows}
    for key, expect in EXPECTED.items():
        row = by_key.get(key)
        if row is None or row.outcome in ("skipped", "failed"):
            state = "not run" if row is None else row.outcome
            print(f"  ??   {key[0]} {key[1]}: {state}")
            continue
        layers = row.counts()
        ok = all(layers.get(code, 0) == n for code, n in expect.counts.items())
        print(f"  {'ok' if ok else 'FAIL':<4} {key[0]} {key[1]}: findings per layer "
              f"{dict(layers) or '{}'}, expected {expect.counts} ({expect.why})"
              + (f"; trace {row.trace}" if row.trace != "full" else ""))
        if not ok:
            for f in row.findings[:5]:
                print(f"         {f.code} {f.module} {f.path}:{f.line}: {f.message[:160]}")


def print_cross_check(rows: list[Row]) -> None:
    """Direct edges seen when running a model that bnlint did not report (possible misses:
    or the layer's output also goes elsewhere, where its bias matters), and findings with no
    direct edge (seen through pooling, adds or functional calls, which hooks cannot see)."""
    print("\n== Cross-check: what running each model once shows, against the findings ==")
    ran = [r for r in rows if r.ran is not None]
    for code in ("BN001", "BN002"):
        direct = found = 0
        for r in ran:
            static = {f.module for f in r.findings if f.code == code}
            direct += len(r.ran[code])
            found += len(r.ran[code] & static)
            missed = sorted(r.ran[code] - static)
            beyond = sorted(m for m in static - r.ran[code] if m)
            if missed:
                print(f"  {code} {r.source}/{r.name}: direct edge, not reported: "
                      f"{', '.join(missed[:4])}{' ...' if len(missed) > 4 else ''}")
            if beyond:
                print(f"  {code} {r.source}/{r.name}: reported without a direct edge: "
                      f"{', '.join(beyond[:4])}{' ...' if len(beyond) > 4 else ''}")
        print(f"  {code}: {found} of {direct} "
              f"direct edges seen at run time are reported ({len(ran)} models run)")
    for r in rows:
        if r.ran_error:
            print(f"  not run: {r.source}/{r.name}: {r.ran_error}")


def print_findings(rows: list[Row]) -> None:
    print("\n== Every finding (merged per source line, as bnlint reports them) ==")
    for r in rows:
        for f in merge(r.findings):
            where = f"{f.path}:{f.line}" if f.path else "(no source line)"
            print(f"  {r.source}/{r.name} {f.code} {where} `{f.module}`: {f.message[:200]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*",
                        help="only these models (any torchvision or timm name)")
    parser.add_argument("--timm-per-family", type=int, default=2, choices=(0, 1, 2))
    parser.add_argument("--timeout", type=int, default=120, help="seconds per model")
    parser.add_argument("--no-run", action="store_true",
                        help="skip the cross-check that runs each model once")
    args = parser.parse_args()
    signal.signal(signal.SIGALRM, _alarm)
    torch.set_num_threads(os.cpu_count() or 1)

    start = time.perf_counter()
    todo = [("torchvision", *m) for m in torchvision_models()]
    left_out: list[str] = []
    if args.names:
        todo = [t for t in todo if t[2] in args.names]
        todo += [("timm", "classification", n, lambda n=n: timm.create_model(n))
                 for n in args.names if n in timm.list_models()]
    elif args.timm_per_family:
        sample, left_out = timm_models(args.timm_per_family)
        todo += [("timm", *m) for m in sample]
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"timm {timm.__version__}, bnlint {bnlint.__version__}: {len(todo)} models")
    if left_out:
        print(f"timm families without a model of at most {TIMM_MAX_PARAMS / 1e6:.0f}M "
              f"parameters, left out: {', '.join(left_out)}")
    print()
    rows = []
    for source, task, name, build in todo:
        rows.append(run_one(source, task, name, build, args.timeout, not args.no_run))
        print(f"[{len(rows)}/{len(todo)}] {source} {name}: {rows[-1].outcome} "
              f"({rows[-1].seconds:.1f} s)", file=sys.stderr, flush=True)
        gc.collect()
    print_table(rows)
    print_summary(rows)
    print_precision(rows)
    print_cross_check(rows)
    print_findings(rows)
    print(f"\n{len(rows)} models in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
