"""The baseline: `--generate-baseline FILE` records a project's findings, `--baseline FILE` (or
`baseline` in [tool.bnlint]) reports only new ones, matched without line numbers."""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import FIXTURES, ROOT, run_bnlint

# the `bnlint` of this environment, as in a user's activated virtualenv
ENVIRONMENT = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent),
                                                      os.environ.get("PATH", "")])}

PREDICT = '''\
import torch

from net import Net


def score(model, batches):
    with torch.no_grad():
        return [model(batch).softmax(-1) for batch in batches]


model = Net()
model.load_state_dict(torch.load("net.pt"))
print(score(model, torch.load("batches.pt")))
'''

NET = '''\
import torch.nn as nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x):
        return self.bn(self.conv(x)).mean((2, 3))
'''


@pytest.fixture
def project(tmp_path):
    (tmp_path / "models").mkdir()
    shutil.copy(FIXTURES / "vgg.py", tmp_path / "models" / "vgg.py")
    (tmp_path / "net.py").write_text(NET, encoding="utf-8")
    (tmp_path / "predict.py").write_text(PREDICT, encoding="utf-8")
    return tmp_path


def bnlint(folder, *args) -> subprocess.CompletedProcess:
    """A run in a process of its own: the files it imports were edited since the last run."""
    return subprocess.run([sys.executable, "-m", "bnlint", *args], cwd=folder,
                          capture_output=True, text=True)


def report(folder, *args):
    result = bnlint(folder, ".", "--format", "json", *args)
    return result, json.loads(result.stdout)


def test_generate_writes_one_sorted_entry_per_instance_and_exits_0(project):
    result = run_bnlint(".", "--generate-baseline", "bnlint-baseline.json", cwd=project)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "Wrote 3 findings (18 entries) to the baseline bnlint-baseline.json." in result.stderr
    text = (project / "bnlint-baseline.json").read_text()
    lines = text.splitlines()
    assert lines[:3] == ["{", '  "bnlint-baseline": 1,', '  "findings": [']
    entries = json.loads(text)["findings"]
    assert len(lines) == len(entries) + 5  # one entry per line, for reviews
    vgg = [(e["model"], e["module"]) for e in entries if e["path"] == "models/vgg.py"]
    modules = [f"features.{i}" for i in (0, 4, 8, 11, 15, 18, 22, 25)]
    assert vgg == [(f"models/vgg.py:{model}", m) for model in ("vgg11()", "vgg11_small()")
                   for m in modules]
    assert [e for e in entries if e["path"] != "models/vgg.py"] == [
        {"path": "net.py", "code": "BN001", "model": "net.py:Net()", "module": "conv"},
        {"path": "predict.py", "code": "BN003", "function": "score",
         "statement": "return [model(batch).softmax(-1) for batch in batches]"},
    ]


def test_baseline_hides_known_findings_and_says_how_many(project):
    run_bnlint(".", "--generate-baseline", "base.json", cwd=project)
    result, data = report(project, "--baseline", "base.json")
    assert result.returncode == 0 and data["findings"] == []
    assert data["summary"]["baselined"] == 3
    text = run_bnlint(".", "--baseline", "base.json", cwd=project)
    assert text.exit_code == 0
    assert "(3 models analysed, 1 skipped, 3 findings hidden by the baseline)." in text.stdout


def test_unrelated_edits_do_not_bring_old_findings_back(project):
    run_bnlint(".", "--generate-baseline", "base.json", cwd=project)
    vgg = project / "models" / "vgg.py"
    vgg.write_text('"""Models."""\n\n' + vgg.read_text().replace(
        "import torch.nn as nn", "import math\nimport torch.nn as nn"))
    # the statement moves down and is laid out again: the same statement
    (project / "predict.py").write_text(PREDICT.replace(
        "def score(", "SEED = 0\n\n\ndef score(").replace(
        "return [model(batch).softmax(-1) for batch in batches]",
        "return [\n            model(batch).softmax(-1)  # probabilities\n"
        "            for batch in batches\n        ]"))
    result, data = report(project, "--baseline", "base.json")
    assert data["findings"] == [] and data["summary"]["baselined"] == 3, result.stderr


def test_a_new_instance_or_a_new_finding_is_reported(project):
    run_bnlint(".", "--generate-baseline", "base.json", cwd=project)
    vgg = project / "models" / "vgg.py"
    vgg.write_text(vgg.read_text() + '\n\ndef vgg11_half():\n    return VGG("VGG11", width=0.5)\n')
    (project / "predict.py").write_text(PREDICT + "with torch.no_grad():\n"
                                        "    print(model(torch.zeros(1, 3, 8, 8)))\n")
    result, data = report(project, "--baseline", "base.json")
    assert result.returncode == 1
    found = [(f["code"], f["path"]) for f in data["findings"]]
    # the line that builds the convs now builds them in a third model too
    assert found == [("BN001", "models/vgg.py"), ("BN003", "predict.py")]
    assert data["findings"][1]["line"] == PREDICT.count("\n") + 2
    assert data["summary"]["baselined"] == 2


def test_each_entry_hides_one_finding(project):
    """Two inferences written alike in one function are two entries; a third is new."""
    twice = PREDICT.replace("        return [model(batch)",
                            "        model(batches[0])\n        model(batches[0])\n"
                            "        return [model(batch)")
    (project / "predict.py").write_text(twice)
    run_bnlint("predict.py", "--generate-baseline", "base.json", cwd=project)
    entries = json.loads((project / "base.json").read_text())["findings"]
    assert [e["statement"] for e in entries].count("model(batches[0])") == 2
    (project / "predict.py").write_text(twice.replace("        return [model(batch)",
                                                      "        model(batches[0])\n"
                                                      "        return [model(batch)"))
    result = run_bnlint("predict.py", "--baseline", "base.json", "--format", "json", cwd=project)
    assert [f["line"] for f in json.loads(result.stdout)["findings"]] == [10]


def test_fixed_findings_drop_out_when_it_is_generated_again(project):
    run_bnlint(".", "--generate-baseline", "base.json", cwd=project)
    (project / "net.py").write_text(NET.replace("nn.Conv2d(3, 8, 3)",
                                                "nn.Conv2d(3, 8, 3, bias=False)"))
    bnlint(project, ".", "--generate-baseline", "base.json")
    entries = json.loads((project / "base.json").read_text())["findings"]
    assert "net.py" not in {e["path"] for e in entries} and len(entries) == 17


def test_baseline_from_pyproject_is_found_from_a_subfolder(project):
    (project / "pyproject.toml").write_text('[tool.bnlint]\nbaseline = "bnlint-baseline.json"\n')
    run_bnlint(".", "--generate-baseline", "bnlint-baseline.json", cwd=project)
    result = run_bnlint(".", "--format", "json", cwd=project / "models")
    data = json.loads(result.stdout)
    assert result.exit_code == 0 and data["summary"]["baselined"] == 1, result.output


@pytest.mark.parametrize("content, message", [
    (None, "no such file; write it with `--generate-baseline"),
    ("[1, 2]", "not a bnlint baseline"),
    ("{", "cannot read it"),
])
def test_a_missing_or_broken_baseline_is_an_error(project, content, message):
    if content is not None:
        (project / "base.json").write_text(content)
    result = run_bnlint(".", "--baseline", "base.json", cwd=project)
    assert result.exit_code == 2 and message in result.stderr
    assert "Traceback" not in result.output


def test_generating_it_with_a_failing_model_still_fails(project):
    (project / "broken.py").write_text("import torch\nimport not_installed_here\n")
    result = run_bnlint(".", "--generate-baseline", "base.json", cwd=project)
    assert result.exit_code == 2
    assert "broken.py: import failed" in result.stderr
    assert len(json.loads((project / "base.json").read_text())["findings"]) == 18


def test_generate_baseline_does_not_go_with_fixing(project):
    result = run_bnlint(".", "--generate-baseline", "base.json", "--fix", cwd=project)
    assert result.exit_code == 2 and "--generate-baseline" in result.output
    assert not (project / "base.json").exists()


def test_script_findings_name_their_function_by_its_qualified_name(tmp_path):
    (tmp_path / "train.py").write_text(textwrap.dedent('''\
        import torch
        from torch import nn


        class Trainer:
            def __init__(self):
                self.model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))

            @torch.no_grad()
            def predict(self, x):
                return self.model(x)


        Trainer().predict(torch.zeros(2, 4))
    '''))
    run_bnlint("train.py", "--generate-baseline", "base.json", cwd=tmp_path)
    [entry] = json.loads((tmp_path / "base.json").read_text())["findings"]
    assert entry == {"path": "train.py", "code": "BN003", "function": "Trainer.predict",
                     "statement": "return self.model(x)"}


# --- the README's walk-through ---------------------------------------------------------------

def readme_section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.search(r"^### A baseline for the findings a project has\n(.*?)(?=^##)", text,
                     re.S | re.M)[1]


def test_readme_session_runs_as_shown(tmp_path):
    shutil.copytree(FIXTURES, tmp_path / "fixtures")
    (session,) = re.findall(r"```console\n(.*?)```", readme_section(), re.S)
    steps = re.findall(r"^\$ (.*)\n((?:[^$].*\n)*)", session, re.M)
    assert len(steps) == 2
    for command, shown in steps:
        result = subprocess.run(command, shell=True, cwd=tmp_path, capture_output=True,
                                text=True, env=ENVIRONMENT)
        assert result.returncode == 0, result.stderr
        assert (result.stdout + result.stderr).splitlines() == shown.splitlines()


def test_readme_excerpt_is_what_the_file_holds(tmp_path):
    (sample,) = re.findall(r"```json\n(.*?)```", readme_section(), re.S)
    assert json.loads(sample)["bnlint-baseline"] == 1
    shutil.copytree(FIXTURES, tmp_path / "fixtures")
    run_bnlint("fixtures/vgg.py", "fixtures/act_before_bn.py",
               "fixtures/scripts/predict_train_mode.py", "--generate-baseline", "base.json",
               cwd=tmp_path)
    written = (tmp_path / "base.json").read_text().splitlines()
    excerpt = sample.splitlines()
    assert excerpt[:3] == written[:3] and excerpt[-2:] == written[-2:]
    lines = [line.strip().rstrip(",") for line in written]
    entries = [line.strip().rstrip(",") for line in excerpt[3:-2]]
    assert all(entry in lines for entry in entries)
    assert sorted(entries, key=lines.index) == entries
