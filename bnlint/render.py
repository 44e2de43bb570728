"""Report -> text for people (rich; ``concise``: one line per finding), JSON, JSON Lines (one
finding a line), SARIF 2.1.0 for
code scanning, GitHub annotations; and per-rule statistics as text or JSON."""

from __future__ import annotations

import ast
import json
import os
import re
from typing import TextIO

from bnlint import __version__, notebook
from bnlint.files import parse, read_source, source_line
from bnlint.findings import Finding, ModelResult, Report
from bnlint.rules import RULES, Safety

FORMATS = ("text", "concise", "json", "jsonl", "sarif", "github")
COLORS = ("auto", "always", "never")


def render(report: Report, fmt: str, out: TextIO, *, verbose: bool = False, color: str = "auto",
           quiet: bool = False, statistics: bool = False) -> None:
    """``quiet``: the findings and failing models only; ``statistics``: a count per rule in
    place of the findings (as text or JSON)."""
    if fmt in ("text", "concise"):
        render_text(report, out, verbose=verbose, color=color, quiet=quiet,
                    statistics=statistics, snippets=fmt == "text")
    elif statistics:
        render_statistics(report, out)
    else:
        {"json": render_json, "jsonl": render_jsonl, "sarif": render_sarif,
         "github": render_github}[fmt](
            report, out, verbose=verbose)


def _where(f) -> str:
    if f.path is None:
        return f"<{f.model}>" if f.model else "<model>"
    cell = f"cell {f.cell}:" if f.cell is not None else ""
    return f"{f.path}:{cell}{f.line}:{f.col}"


def _file_line(f) -> int | None:
    """The line of the file itself a finding is on (in a notebook: of its JSON)."""
    if f.cell is None:
        return f.line
    try:
        return notebook.file_line(read_source(f.path), f.cell, f.line)
    except (OSError, UnicodeDecodeError):
        return None


def _opaque(m: ModelResult) -> str:
    """What a partly analysed model left unchecked."""
    names = ", ".join(f"`{n}`" for n in m.opaque if n)
    what = ["the model's own forward"] if "" in m.opaque else []
    what += [f"the forward of {names}"] if names else []
    return (f"could not trace {' and '.join(what)}, so how it connects its layers was not "
            "checked (its submodules were analysed one by one)")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


def _head(report: Report) -> str:
    """The summary's first words: what was found, or how much of the run can be trusted."""
    s = report.summary
    found = s["findings"] + len(report.fixed or ())
    if found:
        return f"Found {_plural(found, 'finding')}"
    if report.warnings:
        return "[yellow]Nothing was checked[/]"
    if report.has_errors:
        return "No findings, but not every model could be checked"
    if report.partial:
        partly = len(report.partial)
        return (f"No findings, but {_plural(partly, 'model')} "
                f"{'was' if partly == 1 else 'were'} only partly analysed")
    if not report.complete:
        return "No findings in what was checked"
    if report.baselined:
        return "[green]No new findings[/]"
    return "[green]All checks passed![/]"


def console_for(out: TextIO, color: str = "auto"):
    """A rich console writing to ``out``. ``color``: ``always`` styles the text, ``never`` does
    not, ``auto`` styles it on a terminal unless the ``NO_COLOR`` variable is set (not empty),
    which turns off every style, bold included."""
    from rich.console import Console

    if color == "always":
        return Console(file=out, highlight=False, soft_wrap=True, force_terminal=True,
                       color_system="standard", no_color=False)
    plain = color == "never" or bool(os.environ.get("NO_COLOR"))
    return Console(file=out, highlight=False, soft_wrap=True,
                   **({"color_system": None} if plain else {}))


def statistics(report: Report) -> list[tuple[int, str, str]]:
    """``(count, code, name)`` per rule with findings, the most frequent first."""
    counts = report.summary["by_code"]
    return sorted(((n, code, RULES[code].name) for code, n in counts.items()),
                  key=lambda row: (-row[0], row[1]))


def render_jsonl(report: Report, out: TextIO, **_) -> None:
    """One JSON object per finding per line, as ``--format json`` writes each finding."""
    for finding in report.findings:
        write_jsonl(finding, out)


def write_jsonl(finding: Finding, out: TextIO) -> None:
    out.write(json.dumps(finding.to_dict()) + "\n")


def render_statistics(report: Report, out: TextIO) -> None:
    json.dump([{"code": code, "name": name, "count": n} for n, code, name in statistics(report)],
              out, indent=2)
    out.write("\n")


def render_text(report: Report, out: TextIO, *, verbose: bool = False, color: str = "auto",
                quiet: bool = False, statistics: bool = False, snippets: bool = False) -> None:
    """Each finding (``snippets``: with the line of code it points at), or with ``statistics``
    a count per rule; then the models that failed, were skipped or partly analysed, and the
    summary. ``quiet`` keeps the findings and the failures."""
    from rich.markup import escape

    console = console_for(out, color)
    files: dict = {}  # path -> where its expressions start and end, for the snippets
    if statistics:
        _statistics_text(console, report)
    for f in () if statistics else report.findings:
        mark = " [cyan]\\[*][/]" if f.fix == Safety.SAFE else ""
        console.print(f"[bold]{escape(_where(f))}:[/] [bold red]{f.code}[/]{mark} {escape(f.message)}")
        context = [f"model {f.model}"] if f.model else []
        if f.module:
            context.append(f"module {f.module}")
        if context:
            console.print(f"    [dim]{escape(', '.join(context))}[/]")
        if snippets:
            _snippet(console, f, files)
    for m in report.models:
        if m.status == "error":
            console.print(f"[bold]{escape(m.spec)}:[/] [bold red]error[/] {escape(m.reason or '')}")
            if verbose and m.detail:
                console.print(escape(m.detail.rstrip()), style="dim")
        elif quiet:
            continue
        elif m.status == "skipped":
            console.print(f"[bold]{escape(m.spec)}:[/] [yellow]skipped[/] {escape(m.reason or '')}")
        elif m.opaque:
            console.print(f"[bold]{escape(m.spec)}:[/] [yellow]partly analysed:[/] "
                          f"{escape(_opaque(m))}")
            if m.reason:
                console.print(f"    [dim]{escape(m.reason)}[/]")
            if verbose:
                _print_traced_by(console, m)
        elif verbose:
            console.print(f"[bold]{escape(m.spec)}:[/] [green]analysed[/] (trace: {m.trace})")
            if m.reason:
                console.print(f"    [dim]{escape(m.reason)}[/]")
            _print_traced_by(console, m)
        if verbose and m.status == "ok":
            input_ = m.example.describe() if m.example else "none given"
            for note in (f"input: {input_}", *m.notes):
                console.print(f"    [dim]{escape(note)}[/]")
    if quiet:
        return
    s = report.summary
    fixed = None if report.fixed is None else len(report.fixed)
    counts = [f"{_plural(s['models_analysed'], 'model')} analysed"]
    if s["models_partly_analysed"]:
        counts.append(f"{s['models_partly_analysed']} only partly")
    if fixed is not None and fixed + s["findings"]:
        counts[:0] = [f"{fixed} fixed", f"{s['findings']} remaining"]
    if s["models_skipped"]:
        counts.append(f"{s['models_skipped']} skipped")
    if s["models_failed"]:
        counts.append(f"[red]{s['models_failed']} failed[/]")
    if report.baselined:
        counts.append(f"{_plural(report.baselined, 'finding')} hidden by the baseline")
    by_file = s["models_by_file"]
    if len(by_file) > 1:
        console.print("Models checked per file: " + escape(", ".join(
            f"{path} {count}" for path, count in by_file.items())) + ".")
    console.print(f"{_head(report)} ({', '.join(counts)}).")
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


def _statistics_text(console, report: Report) -> None:
    rows = statistics(report)
    width = max((len(str(n)) for n, _, _ in rows), default=1)
    for n, code, name in rows:
        console.print(f"{n:>{width}}  [bold red]{code}[/]  {name}")


def _snippet(console, f: Finding, files: dict) -> None:
    """The line a finding points at, with a caret under the code it means, as ruff shows it."""
    from rich.text import Text

    text = source_line(f.path, f.line) if f.path and f.line else ""
    if not text.strip():
        return
    start = min(max((f.col or 1) - 1, 0), len(text))
    if f.path not in files:
        files[f.path] = _expressions(f.path)
    end = _extent(files[f.path], f.line, start, text)
    shown, before = text.expandtabs(), len(text[:start].expandtabs())
    carets = max(len(text[:end].expandtabs()) - before, 1)
    gutter = " " * len(str(f.line))
    console.print(Text(f"{gutter} |", style="bold blue"))
    console.print(Text.assemble((f"{f.line} |", "bold blue"), f" {shown}"))
    console.print(Text.assemble((f"{gutter} |", "bold blue"), " " * (before + 1),
                                ("^" * carets + f" {f.code}", "bold red")))
    console.print(Text(f"{gutter} |", style="bold blue"))
    console.print()


def _extent(expressions: dict, line: int, start: int, text: str) -> int:
    """Where the code a finding points at ends on its line (a character index): the longest
    expression starting there, else a comment to the line's end, else the word there."""
    offset = len(text[:start].encode())
    end = expressions.get((line, offset))
    if end is not None:
        end_line, end_offset = end
        if end_line == line:
            return len(text.encode()[:end_offset].decode("utf-8", "ignore"))
        return len(text.rstrip())
    if text[start:].startswith("#"):
        return len(text.rstrip())
    word = re.match(r"\w+", text[start:])
    return start + (len(word[0]) if word else 1)


def _expressions(path: str) -> dict[tuple[int, int], tuple[int, int]]:
    """Where each expression of a file starts -> where the longest one starting there ends."""
    tree = parse(path)
    ends: dict[tuple[int, int], tuple[int, int]] = {}
    for node in ast.walk(tree) if tree is not None else ():
        if isinstance(node, ast.expr):
            start, end = (node.lineno, node.col_offset), (node.end_lineno, node.end_col_offset)
            ends[start] = max(ends.get(start, end), end)
    return ends


def _print_traced_by(console, m) -> None:
    """How each part was seen, where more than fx alone was needed."""
    from rich.markup import escape

    if set(m.traced_by) - {"fx"}:
        parts = [f"{method}: {', '.join(n or '<model>' for n in names)}"
                 for method, names in m.traced_by.items()]
        console.print(f"    [dim]traced by {escape('; '.join(parts))}[/]")


def render_json(report: Report, out: TextIO, *, verbose: bool = False) -> None:
    json.dump(report.to_dict(), out, indent=2)
    out.write("\n")


def _physical(path: str, line: int | None, col: int | None = None) -> dict:
    region = {"startLine": line or 1}
    if col:
        region["startColumn"] = col
    return {"artifactLocation": {"uri": path.replace("\\", "/"), "uriBaseId": "%SRCROOT%"},
            "region": region}


def _logical(model: str | None, module: str | None) -> dict:
    return {"fullyQualifiedName": ":".join(x for x in (model, module) if x), "kind": "module"}


def _notifications(report: Report) -> list[dict]:
    """What the text says besides findings: models that failed, were skipped or were only
    partly analysed, and runs that checked nothing."""
    notes = [{"level": "warning", "message": {"text": w}, "descriptor": {"id": "not-checked"}}
             for w in report.warnings]
    for m in report.models:
        if m.status == "error":
            level, kind, text = "error", "model-failed", f"{m.spec}: {m.reason}"
        elif m.status == "skipped":
            level, kind, text = "note", "model-skipped", f"{m.spec}: skipped: {m.reason}"
        elif m.opaque:
            level, kind = "warning", "partly-analysed"
            text = f"{m.spec}: partly analysed: {_opaque(m)}"
        else:
            continue
        note = {"level": level, "message": {"text": text}, "descriptor": {"id": kind}}
        if m.path:
            note["locations"] = [{"physicalLocation": _physical(m.path, m.line)}]
        notes.append(note)
    return notes


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
            if f.cell is None:
                location["physicalLocation"] = _physical(f.path, f.line, f.col)
            else:  # a notebook: the line of its JSON where that is one place, and the cell's own
                line = _file_line(f)
                physical = _physical(f.path, line)
                if line is None:
                    del physical["region"]
                location["physicalLocation"] = physical
                location["properties"] = {"cell": f.cell, "cellLine": f.line, "cellColumn": f.col}
        names = [_logical(model, module)
                 for model, module, _ in f.instances or [(f.model, f.module, f.related)]
                 if model or module]
        if names:  # every module the finding stands for
            location["logicalLocations"] = names
        result["locations"] = [location] if location else []
        if f.instances:
            result["properties"] = {"instances": [i.to_dict() for i in f.instances]}
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
            "invocations": [{
                "executionSuccessful": not report.has_errors,
                "toolExecutionNotifications": _notifications(report),
            }],
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
            props = [f"file={_escape_property(m.path)}", f"line={m.line or 1}"] if m.path else []
            props.append("title=bnlint")
            out.write(f"::error {','.join(props)}::{_escape_data(f'{m.spec}: {m.reason}')}\n")
