"""BN900: a suppression comment that suppresses nothing.

It is judged after the other rules ran, from what they did, and only for the rules that ran and
where they looked: a script rule reads every line of the files it checks; a graph rule sees the
lines where a model seen in full (traced, or recorded on an input) built its layers. So under
``--static`` a comment silencing BN001 is never called unused, nor is one in a helper file
whose layers no model checked here uses. A bare ``# noqa`` belongs to every linter and is left
alone; a bare ``# bnlint: ignore`` is judged only when every rule ran. Only a comment that names
BN900 silences it (or per-file-ignores): a bare one is what it judges.
"""

from __future__ import annotations

import io
import os
import tokenize
from collections.abc import Iterable
from pathlib import Path

from bnlint import suppressions
from bnlint.files import Site, read_source, stand_in
from bnlint.findings import Hit
from bnlint.rules import RULES, Scope

CODE = "BN900"


def check(usage: suppressions.Usage, files: Iterable[Path], codes: Iterable[str]) -> list[Hit]:
    """The unused suppressions in ``files`` (the files the run checked) and in the files where
    the models analysed built layers, judged for the rules in ``codes``."""
    scripts = {c for c in codes if RULES[c].scope == Scope.SCRIPT}
    graphs = {c for c in codes if RULES[c].scope == Scope.GRAPH}
    read = {os.path.realpath(f) for f in files}

    def judgeable(code: str, path: str, line: int) -> bool:
        return (code in scripts and path in read) or (code in graphs and (path, line) in usage.seen)

    everything = set(RULES) - {CODE}
    hits = []
    for path in sorted(read | {path for path, _ in usage.seen}):
        for line, col, comment in _comments(path):
            for d in suppressions.directives(comment):
                if d.codes:
                    unknown = [c for c in d.codes if c not in RULES] if d.own else []
                    unused = [c for c in d.codes if c in RULES and judgeable(c, path, line)
                              and (path, line, c) not in usage.used]
                    stale = bool(unused or unknown)
                else:  # bare: a `# noqa` is every linter's; `# bnlint: ignore` every rule's
                    unknown, unused = [], []
                    stale = d.own and (path, line, suppressions.ALL) not in usage.used and all(
                        judgeable(c, path, line) for c in everything)
                if stale:
                    hits.append(_hit(path, line, col + d.col - 1, d, unused, unknown))
    return hits


def _comments(path: str) -> list[tuple[int, int, str]]:
    """``(line, col, text)`` of each comment of a file (never text inside a string); ``col``
    is 1-based, in characters."""
    try:
        text = read_source(stand_in(path))
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (OSError, UnicodeDecodeError, SyntaxError, tokenize.TokenError):
        return []
    return [(t.start[0], t.start[1] + 1, t.string) for t in tokens if t.type == tokenize.COMMENT]


def _hit(path: str, line: int, col: int, directive: suppressions.Directive, unused: list[str],
         unknown: list[str]) -> Hit:
    if not directive.codes:
        why, advice = "no finding of any rule here to silence", "Remove it."
    else:
        reasons = [f"no {' or '.join(unused)} finding here to silence"] if unused else []
        if unknown:
            reasons.append(f"{', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not a "
                           "bnlint rule (`bnlint --list-rules`)")
        why = "; ".join(reasons)
        every = len(unused) + len(unknown) == len(directive.codes)
        advice = "Remove it." if every else (
            f"Remove {', '.join(unused + unknown)} from it.")
    return Hit(code=CODE, message=f"`{directive.text}`: {why}. {advice}", module=None,
               related=(), anchor=Site(path, line, col, line, col))
