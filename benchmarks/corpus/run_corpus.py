#!/usr/bin/env python
"""Run bnlint over the real-code corpus and score it against TRUTH.tsv.

Usage (from a bnlint checkout, so that branch's bnlint is the one measured), with the corpus
files laid out as README.md beside this script says:

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python benchmarks/corpus/run_corpus.py --corpus DIR --label main

bnlint is run as `python -m bnlint` (PYTHONPATH picks the checkout), or as `bnlint` on PATH with
--bnlint-cmd bnlint. Each model spec of SPECS.tsv and each script of MANIFEST.tsv is one run,
with the repository's folder as working directory. `--example` / `--input-shape` from SPECS.tsv
are passed only when this bnlint's --help lists `--example` (before that, --input-shape was a
--bench option and is a usage error on its own).

Findings are matched to TRUTH.tsv by (repo, path, code) and line: the truth line, an alternative
line listed after a comma, or any line of the constructor call that starts on the truth line.
Rows with verdict `FP` are reviewed false alarms; a finding that matches no row is printed as
UNREVIEWED so that someone reads it and adds it to TRUTH.tsv either way.
"""

from __future__ import annotations

import argparse
import ast
import csv
import json
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent  # MANIFEST.tsv, TRUTH.tsv, SPECS.tsv, _inputs/
CORPUS = HERE  # the extracted files: --corpus
RULES = ("BN001", "BN002", "BN003", "BN004", "BN007", "BN008", "BN009", "BN010")


def read_tsv(name):
    with open(HERE / name, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def repo_dir(repo):
    return CORPUS / repo.replace("/", "__")


def call_span(path, line):
    """Lines covered by the call expression that starts on `line` (just `line` if none)."""
    try:
        tree = ast.parse(path.read_text())
    except (OSError, SyntaxError):
        return {line}
    spans = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and n.lineno == line]
    if not spans:
        return {line}
    end = max(n.end_lineno for n in spans)
    return set(range(line, end + 1))


def load_truth():
    truth = []
    for row in read_tsv("TRUTH.tsv"):
        lines = [int(x) for x in row["line"].split(",")]
        accept = set(lines)
        accept |= call_span(repo_dir(row["repo"]) / row["path"], lines[0])
        truth.append({**row, "lines": lines, "accept": accept})
    return truth


def bnlint_base(cmd):
    return cmd.split() if cmd else [sys.executable, "-m", "bnlint"]


def help_text(base):
    return subprocess.run(base + ["--help"], capture_output=True, text=True, timeout=120).stdout


def run_one(base, cwd, target, extra, timeout):
    args = base + ["--format", "json"] + extra + [target]
    start = time.monotonic()
    try:
        proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout}s", "seconds": timeout}
    seconds = round(time.monotonic() - start, 1)
    try:
        data = json.loads(proc.stdout)
    except json.JSONDecodeError:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {proc.returncode}, no JSON: {' | '.join(tail)}", "seconds": seconds}
    data["seconds"] = seconds
    data["exit"] = proc.returncode
    return data


def normalise(path, cwd):
    p = Path(path)
    if not p.is_absolute():
        p = cwd / p
    try:
        return os.path.relpath(p.resolve(), cwd.resolve())
    except ValueError:
        return str(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, required=True,
                    help="folder holding <owner>__<repo>/ copies of the files MANIFEST.tsv lists")
    ap.add_argument("--label", required=True, help="name of the branch measured; results-<label>.json")
    ap.add_argument("--bnlint-cmd", default="", help="command to run instead of `python -m bnlint`")
    ap.add_argument("--timeout", type=int, default=120, help="seconds per spec")
    ap.add_argument("--only", default="", help="only repos whose name contains this")
    ap.add_argument("--no-inputs", action="store_true", help="never pass --example/--input-shape")
    opts = ap.parse_args()
    global CORPUS
    CORPUS = opts.corpus.resolve()

    base = bnlint_base(opts.bnlint_cmd)
    helptext = help_text(base)
    with_inputs = not opts.no_inputs and "--example" in helptext
    # Scripts are read, not run: --static keeps bnlint from importing them (their imports need
    # packages this machine lacks, which only adds "import failed" noise and time).
    script_args = ["--static"] if "--static" in helptext else []
    truth = load_truth()
    specs = [r for r in read_tsv("SPECS.tsv") if opts.only in r["repo"]]
    scripts = [r for r in read_tsv("MANIFEST.tsv") if r["kind"] == "script" and opts.only in r["repo"]]
    repos = {r["repo"] for r in specs} | {r["repo"] for r in scripts}

    jobs = []
    for r in specs:
        extra = []
        if with_inputs and r["example"]:
            extra = ["--example", r["example"]]
        elif with_inputs and r["input_shape"]:
            extra = ["--input-shape", r["input_shape"]]
        jobs.append((r["repo"], r["target"], extra, "model"))
    for r in scripts:
        jobs.append((r["repo"], r["path"], script_args, "script"))

    print(f"bnlint: {' '.join(base)}  (inputs passed: {with_inputs}); {len(jobs)} runs over {len(repos)} repos")
    findings = {}  # (repo, path, line, code) -> finding
    runs = []
    t0 = time.monotonic()
    for repo, target, extra, kind in jobs:
        cwd = repo_dir(repo)
        data = run_one(base, cwd, target, extra, opts.timeout)
        run = {"repo": repo, "target": target, "kind": kind, "args": extra, "seconds": data.get("seconds")}
        if "error" in data:
            run["error"] = data["error"]
        else:
            run["models"] = [
                {k: m.get(k) for k in ("spec", "status", "reason", "trace", "opaque", "traced_by")}
                for m in data.get("models", [])
            ]
            for f in data.get("findings", []):
                path = normalise(f["path"], cwd)
                key = (repo, path, int(f["line"]), f["code"])
                findings.setdefault(key, {"repo": repo, "path": path, "line": int(f["line"]),
                                          "code": f["code"], "message": f["message"],
                                          "model": f.get("model"), "module": f.get("module")})
        runs.append(run)
        status = run.get("error") or ", ".join(
            f"{m['status']}/{m['trace']}" for m in run.get("models", [])) or "no models"
        print(f"  [{run['seconds']:>5}s] {repo} {target}: {status[:150]}", flush=True)
    total_seconds = round(time.monotonic() - t0, 1)

    # Match findings to truth.
    index = defaultdict(list)
    for t in truth:
        index[(t["repo"], t["path"], t["code"])].append(t)
    matched_truth = set()
    false_alarms, reviewed_fp = [], []
    for key, f in sorted(findings.items()):
        rows = [t for t in index[(f["repo"], f["path"], f["code"])] if f["line"] in t["accept"]]
        true_rows = [t for t in rows if t["verdict"] == "true"]
        if true_rows:
            matched_truth.update(id(t) for t in true_rows)
        elif rows:
            reviewed_fp.append({**f, "note": rows[0]["note"]})
        else:
            false_alarms.append(f)

    in_scope = [t for t in truth if t["verdict"] == "true" and t["repo"] in repos]
    per_rule = {}
    for code in RULES:
        rows = [t for t in in_scope if t["code"] == code]
        found = [t for t in rows if id(t) in matched_truth]
        fa = [f for f in reviewed_fp + false_alarms if f["code"] == code]
        per_rule[code] = {
            "truth": len(rows),
            "found": len(found),
            "recall": round(len(found) / len(rows), 3) if rows else None,
            "false_alarms": len(fa),
        }
    misses = [
        {k: t[k] for k in ("repo", "path", "line", "code", "note")}
        for t in in_scope if id(t) not in matched_truth
    ]
    analysis = []
    for run in runs:
        if "error" in run:
            analysis.append({"repo": run["repo"], "target": run["target"], "status": "run-error",
                             "reason": run["error"]})
            continue
        for m in run["models"]:
            if m["status"] != "ok" or m["trace"] not in ("full", None):
                analysis.append({"repo": run["repo"], "target": run["target"], "spec": m["spec"],
                                 "status": m["status"], "trace": m["trace"],
                                 "opaque": len(m["opaque"] or []),
                                 "reason": (m["reason"] or "")[:300]})

    print(f"\n== {opts.label}: {total_seconds}s, {len(findings)} distinct findings")
    print(f"{'rule':6} {'truth':>5} {'found':>5} {'recall':>6} {'false alarms':>12}")
    for code, s in per_rule.items():
        rec = "-" if s["recall"] is None else f"{s['recall']:.0%}"
        print(f"{code:6} {s['truth']:>5} {s['found']:>5} {rec:>6} {s['false_alarms']:>12}")
    if false_alarms:
        print("\nUNREVIEWED findings (not in TRUTH.tsv; read each and add it as true or FP):")
        for f in false_alarms:
            print(f"  {f['repo']} {f['path']}:{f['line']} {f['code']} {f['message'][:160]}")
    if reviewed_fp:
        print("\nReviewed false alarms (verdict FP in TRUTH.tsv):")
        for f in reviewed_fp:
            print(f"  {f['repo']} {f['path']}:{f['line']} {f['code']} -- {f['note'][:120]}")
    print(f"\nMisses ({len(misses)}):")
    by_file = Counter((m["repo"], m["path"], m["code"]) for m in misses)
    for (repo, path, code), n in sorted(by_file.items()):
        note = next(m["note"] for m in misses if (m["repo"], m["path"], m["code"]) == (repo, path, code))
        print(f"  {repo} {path} {code} x{n}: {note[:140]}")
    print(f"\nModels not fully analysed ({len(analysis)}):")
    for a in analysis:
        what = a.get("spec") or a["target"]
        print(f"  {a['repo']} {what}: {a['status']}/{a.get('trace')} opaque={a.get('opaque', '-')} "
              f"{a['reason'][:140]}")

    out = CORPUS / f"results-{opts.label}.json"
    out.write_text(json.dumps({
        "label": opts.label,
        "bnlint": " ".join(base),
        "inputs_passed": with_inputs,
        "seconds": total_seconds,
        "per_rule": per_rule,
        "misses": misses,
        "unreviewed_findings": false_alarms,
        "reviewed_false_alarms": reviewed_fp,
        "findings": list(findings.values()),
        "not_fully_analysed": analysis,
        "runs": runs,
    }, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
