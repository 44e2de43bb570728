"""The command line: parse options, call the API, pick a renderer, choose the exit code.

Exit codes, as ruff's: 0 no findings, 1 findings, 2 usage error, unreadable or failing model
files, or an internal error.
"""

from __future__ import annotations

import sys
import traceback

import click

from bnlint import __version__
from bnlint.config import ConfigError, load_config
from bnlint.render import FORMATS, render
from bnlint.rules import RULES, UnknownRuleError

EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


def _codes(values: tuple[str, ...]) -> list[str]:
    return [c.strip() for v in values for c in v.split(",") if c.strip()]


def _list_rules(ctx: click.Context, _param, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    width = max(len(r.name) for r in RULES.values())
    click.echo(f"{'code':<6} {'name':<{width}} {'fix':<7} {'default':<8} summary")
    for rule in RULES.values():
        click.echo(f"{rule.code:<6} {rule.name:<{width}} {rule.fix or '-':<7} "
                   f"{'on' if rule.default else 'off':<8} {rule.summary}")
    ctx.exit(EXIT_CLEAN)


def _explain(ctx: click.Context, _param, value: str | None) -> None:
    if not value or ctx.resilient_parsing:
        return
    rule = RULES.get(value.strip().upper())
    if rule is None:
        raise click.BadParameter(f"unknown rule {value!r}; `bnlint --list-rules` shows them all",
                                 param_hint="--explain")
    click.echo(f"{rule.code} ({rule.name}): {rule.summary}\n")
    click.echo(f"Fix: {rule.fix or 'none'}. Enabled by default: {'yes' if rule.default else 'no'}.\n")
    click.echo(rule.explanation.rstrip())
    ctx.exit(EXIT_CLEAN)


EPILOG = """\b
PATHS are .py files, folders (searched recursively), or specs naming a model:
  bnlint models/                        every model the files define
  bnlint 'models/vgg.py:VGG("VGG11")'   an expression run in that file
  bnlint 'torchvision.models:vgg11_bn()'  an expression in an installed module
\b
A plain file is imported only if its top level just defines things; a script that
would start work on import is skipped and named. Configure defaults in
[tool.bnlint] of pyproject.toml; silence one line with `# bnlint: ignore[BN001]`.
\b
Exit status: 0 clean, 1 findings, 2 usage error or a model that failed to load.
"""


@click.command(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EPILOG)
@click.argument("paths", nargs=-1)
@click.option("--select", multiple=True, metavar="CODES",
              help="Only these rule codes or prefixes (comma-separated). Default: the default rules.")
@click.option("--ignore", multiple=True, metavar="CODES",
              help="Skip these rule codes or prefixes (comma-separated).")
@click.option("--exclude", multiple=True, metavar="PATTERN",
              help="Also skip files and folders matching this name or glob.")
@click.option("--static", is_flag=True,
              help="Only the rules that read scripts without running them: nothing is imported, "
                   "so neither torch nor your own packages are needed.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True,
              help="Output format: text for people, json, sarif (code scanning), github (annotations).")
@click.option("-v", "--verbose", is_flag=True,
              help="Show tracebacks of failing models and every model analysed.")
@click.option("--explain", metavar="CODE", callback=_explain, expose_value=False, is_eager=True,
              help="Explain a rule: what it finds, why it matters, what to write instead.")
@click.option("--list-rules", is_flag=True, callback=_list_rules, expose_value=False,
              is_eager=True, help="List every rule and exit.")
@click.version_option(__version__, "--version", prog_name="bnlint")
def main(paths, select, ignore, exclude, static, fmt, verbose):
    """Find BatchNorm mistakes in PyTorch models: a biased layer feeding BatchNorm (BN001),
    an activation before BatchNorm (BN002), and more (`bnlint --list-rules`)."""
    if not paths:
        raise click.UsageError("give the files, folders or model specs to check, e.g. `bnlint .`")
    try:
        settings = load_config()
        from bnlint.lint import lint_specs

        report = lint_specs(
            paths,
            select=_codes(select) or settings.select,
            ignore=_codes(ignore) + settings.ignore,
            exclude=list(exclude) + settings.exclude,
            static=static,
        )
    except (ConfigError, UnknownRuleError) as exc:
        click.echo(f"bnlint: error: {exc}", err=True)
        sys.exit(EXIT_ERROR)
    except Exception as exc:  # noqa: BLE001 - a bug of ours: one line, traceback on request
        click.echo(f"bnlint: internal error: {exc!r}", err=True)
        if verbose:
            click.echo(traceback.format_exc(), err=True)
        else:
            click.echo("Run again with --verbose for the traceback.", err=True)
        sys.exit(EXIT_ERROR)
    render(report, fmt, sys.stdout, verbose=verbose)
    if report.has_errors:
        if fmt in ("json", "sarif"):  # stdout is for programs: say on stderr what failed
            for m in report.models:
                if m.status == "error":
                    click.echo(f"bnlint: error: {m.spec}: {m.reason}", err=True)
        sys.exit(EXIT_ERROR)
    sys.exit(EXIT_FINDINGS if report.findings else EXIT_CLEAN)
