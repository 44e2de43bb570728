"""Report -> text for people (rich), JSON, SARIF 2.1.0 for code scanning, GitHub annotations."""

from __future__ import annotations

import json
from typing import TextIO

from bnlint import __version__, notebook
from bnlint.findings import SAFE, Report
from bnlint.rules import RULES

FORMATS = ("text", "json", "sarif", "github")


def render(report: Report, fmt: str, out: TextIO, *, verbose: bool = False,
           fixed: int | None = None) -> None:
    """``fixed``: after ``--fix``, how many findings the fixes resolved (``report`` holds the
    rest); the text summary counts both."""
    if fmt == "text":
        render_text(report, out, verbose=verbose, fixed=fixed)
        return
    {"json": render_json, "sarif": render_sarif, "github": render_github}[fmt](
        report, out, verbose=verbose)


def _where(f) -> str:
    if f.path is None:
        return f"<{f.model}>" if f.model else "<model>"
    cell = f"cell {f.cell}:" if f.cell is not None else ""
    return f"{f.path}:{cell}{f.line}:{f.col}"


def _file_line(f) -> int | None:
    """The line of the file itself a finding is on (in a notebook: of its JSON)."""
    return f.line if f.cell is None else notebook.file_line(f.path, f.cell, f.line)


def render_text(report: Report, out: TextIO, *, verbose: bool = False,
                fixed: int | None = None) -> None:
    from rich.console import Console
    from rich.markup import escape

    console = Console(file=out, highlight=False, soft_wrap=True)
    for f in report.findings:
        mark = " [cyan]\\[*][/]" if f.fix == SAFE else ""
        console.print(f"[bold]{escape(_where(f))}:[/] [bold red]{f.code}[/]{mark} {escape(f.message)}")
        context = [f"model {f.model}"] if f.model else []
        if f.module:
            context.append(f"module {f.module}")
        if context:
            console.print(f"    [dim]{escape(', '.join(context))}[/]")
    for m in report.models:
        if m.status == "error":
            console.print(f"[bold]{escape(m.spec)}:[/] [bold red]error[/] {escape(m.reason or '')}")
            if verbose and m.detail:
                console.print(escape(m.detail.rstrip()), style="dim")
        elif m.status == "skipped":
            console.print(f"[bold]{escape(m.spec)}:[/] [yellow]skipped[/] {escape(m.reason or '')}")
        elif m.opaque:
            names = ", ".join(n or "<model>" for n in m.opaque)
            console.print(f"[bold]{escape(m.spec)}:[/] [yellow]partly analysed[/] "
                          f"could not trace the forward of: {escape(names)}")
            if verbose and m.reason:
                console.print(f"    [dim]{escape(m.reason)}[/]")
        elif verbose:
            console.print(f"[bold]{escape(m.spec)}:[/] [green]analysed[/] (trace: {m.trace})")
    s = report.summary
    found = s["findings"] + (fixed or 0)
    if found:
        head = f"Found {found} finding{'s' * (found != 1)}"
    elif report.has_errors:
        head = "No findings, but not every model could be checked"
    else:
        head = "[green]All checks passed![/]"
    counts = [f"{s['models_analysed']} model{'s' * (s['models_analysed'] != 1)} analysed"]
    if fixed is not None and found:
        counts[:0] = [f"{fixed} fixed", f"{s['findings']} remaining"]
    if s["models_skipped"]:
        counts.append(f"{s['models_skipped']} skipped")
    if s["models_failed"]:
        counts.append(f"[red]{s['models_failed']} failed[/]")
    console.print(f"{head} ({', '.join(counts)}).")
    if fixed is not None:
        return  # the fix run itself says what it could not fix
    unsafe = s["unsafe_fixable"]
    hint = []
    if s["fixable"]:
        hint.append(f"[cyan]\\[*][/] {s['fixable']} fixable with `--fix`")
    if unsafe:
        hint.append(f"{unsafe} {'more ' if hint else ''}with `--fix --unsafe-fixes`, which "
                    "change what the code does")
    if hint:
        console.print("; ".join(hint) + " (`--diff` shows the edits first).")


def render_json(report: Report, out: TextIO, *, verbose: bool = False) -> None:
    json.dump(report.to_dict(), out, indent=2)
    out.write("\n")


def sarif(report: Report) -> dict:
    codes = sorted(RULES)
    index = {code: i for i, code in enumerate(codes)}
    rules = []
    for code in codes:
        rule = RULES[code]
        rules.append({
            "id": code,
            "name": rule.name,
            "shortDescription": {"text": rule.summary},
            "fullDescription": {"text": rule.summary},
            "help": {"text": rule.explanation, "markdown": rule.explanation},
            "defaultConfiguration": {"level": "warning" if rule.severity == "warning" else "error"},
        })
    results = []
    for f in report.findings:
        result = {
            "ruleId": f.code,
            "ruleIndex": index[f.code],
            "level": "warning" if f.severity == "warning" else "error",
            "message": {"text": f.message},
        }
        location: dict = {}
        if f.path:
            region = {"startLine": f.line, "startColumn": f.col}
            if f.cell is not None:  # a notebook: the line of its JSON, and the cell's own
                line = _file_line(f)
                region = {"startLine": line} if line else None
                location["properties"] = {"cell": f.cell, "cellLine": f.line, "cellColumn": f.col}
            location["physicalLocation"] = {
                "artifactLocation": {"uri": f.path.replace("\\", "/"), "uriBaseId": "%SRCROOT%"},
                **({"region": region} if region else {}),
            }
        if f.model or f.module:
            location["logicalLocations"] = [{
                "fullyQualifiedName": ":".join(x for x in (f.model, f.module) if x),
                "kind": "module",
            }]
        result["locations"] = [location] if location else []
        results.append(result)
    return {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "bnlint",
                "version": __version__,
                "semanticVersion": __version__,
                "rules": rules,
            }},
            "results": results,
        }],
    }


def render_sarif(report: Report, out: TextIO, *, verbose: bool = False) -> None:
    json.dump(sarif(report), out, indent=2)
    out.write("\n")


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def render_github(report: Report, out: TextIO, *, verbose: bool = False) -> None:
    """GitHub Actions workflow commands: each finding becomes an annotation on its line."""
    for f in report.findings:
        level = "warning" if f.severity == "warning" else "error"
        props = [f"title={_escape_property(f.code)}"]
        text = f"{f.code} {f.message}"
        if f.path and f.cell is not None:  # a notebook: the line of its JSON
            line = _file_line(f)
            props = [f"file={_escape_property(f.path)}", *([f"line={line}"] if line else []),
                     *props]
            text = f"{f.code} (cell {f.cell}, line {f.line}) {f.message}"
        elif f.path:
            props = [f"file={_escape_property(f.path)}", f"line={f.line}", f"col={f.col}", *props]
        out.write(f"::{level} {','.join(props)}::{_escape_data(text)}\n")
    for m in report.models:
        if m.status == "error":
            out.write(f"::error title=bnlint::{_escape_data(f'{m.spec}: {m.reason}')}\n")
