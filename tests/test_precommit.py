"""pre-commit and CI set up as the README tells users to, run for real.

The hook configurations and the workflow are read out of README.md, so the snippets users copy
are the ones tested. Every hook runs in a fresh git repository with pre-commit's cache under
the test's tmp_path; the local hooks run in this environment (no hook environment, no second
torch), and the isolated hook's environment is checked to hold no torch.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bnlint.cli import main as cli
from bnlint.config import DEFAULT_EXCLUDE, Config, load_config
from bnlint.rules import RULES
from conftest import FIXTURES, ROOT, line_of

README = (ROOT / "README.md").read_text(encoding="utf-8")
VGG = (FIXTURES / "vgg.py").read_text(encoding="utf-8")
BIASED_CONV = "nn.Conv2d(in_channels, x, kernel_size=3, padding=1)"
VGG_FIXED = VGG.replace(BIASED_CONV, BIASED_CONV[:-1] + ", bias=False)")
VGG_LINE = line_of(FIXTURES / "vgg.py", BIASED_CONV)

needs_fix = pytest.mark.skipif(not any("--fix" in p.opts for p in cli.params),
                               reason="this bnlint has no --fix option")

UTILS = '''\
"""Small helpers shared by the training and evaluation scripts."""


def accuracy(logits, labels):
    return (logits.argmax(1) == labels).float().mean().item()


def lr_at(step, base=0.1, warmup=500):
    return base * min(1.0, (step + 1) / warmup)
'''

TRAIN = '''\
"""Train the classifier on batches saved as tensors."""
import torch
from torch import nn

from models.vgg import vgg11
from utils import lr_at

model = vgg11()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
model.train()
for step, (images, labels) in enumerate(torch.load("batches.pt")):
    for group in optimizer.param_groups:
        group["lr"] = lr_at(step)
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(images), labels).backward()
    optimizer.step()
torch.save(model.state_dict(), "vgg11.pt")
'''


def section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.S | re.M)
    assert match, f"README has no section {title!r}"
    return match[1]


def blocks(title: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", section(title), re.S)


def readme_hook_config(*, local: bool) -> dict:
    """The README's pre-commit config: the ``repo: local`` one, or the one naming this repository."""
    (config,) = [c for c in map(yaml.safe_load, blocks("pre-commit", "yaml"))
                 if (c["repos"][0]["repo"] == "local") == local]
    return config


def with_args(config: dict, *args: str) -> dict:
    for hook in config["repos"][0]["hooks"]:
        hook["args"] = list(args)
    return config


class Project:
    """A user's git repository: files written, staged and committed as a user would, with
    pre-commit's cache under ``home`` and the user's own git settings kept out."""

    def __init__(self, root: Path, home: Path):
        self.root = root
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "PRE_COMMIT"))}
        self.env.update(
            PRE_COMMIT_HOME=str(home),
            GIT_CONFIG_GLOBAL=os.devnull,
            GIT_CONFIG_NOSYSTEM="1",
            # the `bnlint` of this environment, as in a user's activated virtualenv
            PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        )
        root.mkdir(parents=True, exist_ok=True)
        self.git("init", "-q")

    def run(self, *command: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(command, cwd=self.root, env={**self.env, **env},
                              capture_output=True, text=True, timeout=600)

    def git(self, *args: str) -> subprocess.CompletedProcess:
        return self.run("git", "-c", "user.name=t", "-c", "user.email=t@t", *args)

    def pre_commit(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        return self.run(sys.executable, "-m", "pre_commit", *args, **env)

    def write(self, name: str, text: str) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")

    def read(self, name: str) -> str:
        return (self.root / name).read_text(encoding="utf-8")

    def configure(self, config: dict) -> None:
        self.write(".pre-commit-config.yaml", yaml.safe_dump(config, sort_keys=False))
        assert self.pre_commit("install").returncode == 0

    def commit(self) -> subprocess.CompletedProcess:
        self.git("add", "-A")
        return self.git("commit", "-q", "-m", "change")

    def commits(self) -> int:
        result = self.git("rev-list", "--count", "HEAD")
        return int(result.stdout) if result.returncode == 0 else 0


@pytest.fixture
def project(tmp_path) -> Project:
    return Project(tmp_path / "project", tmp_path / "pre-commit-home")


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def imported(result: subprocess.CompletedProcess) -> list[str]:
    """Module names from the ``PYTHONPROFILEIMPORTTIME`` report of every process that ran."""
    return [line.rsplit("|", 1)[1].strip() for line in output(result).splitlines()
            if line.startswith("import time:") and "|" in line]


# --- the hook in the project's own environment ---------------------------------------------

def test_local_hook_blocks_a_commit_with_a_flagged_model_and_accepts_the_fixed_one(project):
    project.configure(readme_hook_config(local=True))
    project.write("models/__init__.py", "")
    project.write("models/vgg.py", VGG)
    project.write("utils.py", UTILS)

    blocked = project.commit()
    assert blocked.returncode == 1
    assert f"models/vgg.py:{VGG_LINE}:21: BN001" in output(blocked)
    assert "bnlint" in output(blocked) and "Failed" in output(blocked)
    assert project.commits() == 0

    project.write("models/vgg.py", VGG_FIXED)
    accepted = project.commit()
    assert accepted.returncode == 0, output(accepted)
    assert project.commits() == 1


def test_local_hook_leaves_out_the_files_exclude_names(project):
    project.configure(readme_hook_config(local=True))
    project.write("pyproject.toml", '[tool.bnlint]\nexclude = ["legacy"]\n')
    project.write("legacy/vgg.py", VGG)
    accepted = project.commit()
    assert accepted.returncode == 0, output(accepted)

    project.write("models/vgg.py", VGG)
    blocked = project.commit()
    assert blocked.returncode == 1
    assert f"models/vgg.py:{VGG_LINE}:21: BN001" in output(blocked)
    assert "legacy" not in output(blocked)


def test_a_model_that_cannot_be_imported_fails_the_commit_in_one_line(project):
    project.configure(readme_hook_config(local=True))
    project.write("models/resnet.py", "import torch.nn as nn\nimport timm_extras\n\n\n"
                                      "class ResNet(nn.Module):\n    pass\n")
    result = project.commit()
    assert result.returncode == 1
    assert "exit code: 2" in output(result)
    assert "models/resnet.py: error import failed: ModuleNotFoundError: No module named " \
           "'timm_extras'" in output(result)
    assert "Traceback" not in output(result)


def test_commit_without_model_code_imports_no_torch_and_runs_bnlint_once(project):
    project.configure(readme_hook_config(local=True))
    project.write("utils.py", UTILS)
    project.write("train.py", TRAIN)
    project.write("conf/defaults.py", 'BATCH_SIZE = 128\nEPOCHS = 30\nDATA = "batches.pt"\n')
    project.git("add", "-A")

    result = project.pre_commit("run", "--verbose", PYTHONPROFILEIMPORTTIME="1")
    assert result.returncode == 0, output(result)
    modules = imported(result)
    assert modules.count("bnlint.cli") == 1  # the three files, linted in one process
    assert "torch" not in modules
    assert "train.py: skipped a script" in output(result)

    # the same measurement sees torch as soon as a model file is staged
    project.write("models/vgg.py", VGG_FIXED)
    project.git("add", "-A")
    result = project.pre_commit("run", "--verbose", PYTHONPROFILEIMPORTTIME="1")
    assert result.returncode == 0, output(result)
    assert "torch" in imported(result)


NOTEBOOK = json.dumps({
    "cells": [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
               "source": ["import torch\n", "from torch import nn\n", "\n",
                          "net = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))\n",
                          "with torch.no_grad():\n", "    print(net(torch.randn(2, 4)))"]}],
    "metadata": {"kernelspec": {"language": "python", "name": "python3"}},
    "nbformat": 4, "nbformat_minor": 5}, indent=1)


def test_local_hook_checks_staged_notebooks(project):
    project.configure(readme_hook_config(local=True))
    project.write("explore.ipynb", NOTEBOOK)
    blocked = project.commit()
    assert blocked.returncode == 1
    assert "explore.ipynb:cell 1:6:11: BN003 `net` runs inference" in output(blocked)


def test_the_local_snippet_is_the_hook_this_repository_offers():
    local = readme_hook_config(local=True)["repos"][0]["hooks"][0]
    offered = {h["id"]: h for h in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())}
    assert {k: v for k, v in offered["bnlint"].items() if k != "description"} == local


# --- the fixing hook -----------------------------------------------------------------------

@needs_fix
def test_fixing_hook_rewrites_the_model_fails_once_then_passes(project):
    project.configure(with_args(readme_hook_config(local=True), "--fix"))
    project.write("models/__init__.py", "")
    project.write("models/vgg.py", VGG)

    fixed = project.commit()
    assert fixed.returncode == 1
    assert "files were modified by this hook" in output(fixed)
    assert project.read("models/vgg.py") == VGG_FIXED
    assert project.commits() == 0

    accepted = project.commit()
    assert accepted.returncode == 0, output(accepted)
    assert project.commits() == 1


@needs_fix
def test_fix_exits_1_when_it_changed_a_file_or_findings_remain(project):
    project.write("models/vgg.py", VGG)
    project.write("models/small.py", (FIXTURES / "act_before_bn.py").read_text())
    changed = project.run("bnlint", "--fix", "models/vgg.py")
    assert changed.returncode == 1, output(changed)
    assert project.read("models/vgg.py") == VGG_FIXED
    assert project.run("bnlint", "--fix", "models/vgg.py").returncode == 0

    # BN002's fix is unsafe, so --fix leaves it: the finding remains
    remaining = project.run("bnlint", "--fix", "models/small.py")
    assert remaining.returncode == 1 and "BN002" in output(remaining)
    assert project.read("models/small.py") == (FIXTURES / "act_before_bn.py").read_text()


# --- the isolated hook ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def static_hook(tmp_path_factory) -> tuple[dict, Path]:
    """The README's config for ``bnlint-static``, pointed at a git copy of this working tree
    (pre-commit installs hooks from a commit), and a pre-commit cache shared by the tests that
    use it, so its environment is built once."""
    source = tmp_path_factory.mktemp("bnlint-repo")
    for name in ("pyproject.toml", "README.md", ".pre-commit-hooks.yaml"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "bnlint", source / "bnlint",
                    ignore=shutil.ignore_patterns("__pycache__"))
    home = tmp_path_factory.mktemp("pre-commit-home")
    hooks = Project(source, home)
    assert hooks.commit().returncode == 0
    config = readme_hook_config(local=False)
    config["repos"][0].update(repo=str(source), rev=hooks.git("rev-parse", "HEAD").stdout.strip())
    return config, home


def test_static_hook_installs_without_torch_and_never_imports_the_models(static_hook, tmp_path):
    config, home = static_hook
    project = Project(tmp_path / "project", home)
    project.configure(config)
    project.write("models/__init__.py", "")
    project.write("models/vgg.py", VGG)
    project.write("train.py", TRAIN)

    result = project.commit()
    # BN001 needs the model traced, which this hook never does; importing vgg.py there would
    # fail, since its environment has no torch
    assert result.returncode == 0, output(result)
    environments = list(home.glob("repo*/py_env-*/**/site-packages"))
    assert environments and all((env / "bnlint").is_dir() for env in environments)
    assert not any((env / "torch").exists() for env in environments)


@pytest.mark.skipif("BN003" not in RULES, reason="this bnlint has no BN003 rule")
def test_static_hook_blocks_inference_in_training_mode(static_hook, tmp_path):
    config, home = static_hook
    project = Project(tmp_path / "project", home)
    project.configure(config)
    project.write("predict.py", (
        '"""Print the predicted classes of a batch with a trained checkpoint."""\n'
        "import sys\n\nimport torch\n\nfrom models.vgg import VGG\n\n"
        "model = VGG(\"VGG11\")\nmodel.load_state_dict(torch.load(sys.argv[1]))\n"
        "with torch.no_grad():\n    logits = model(torch.load(sys.argv[2]))\n"
        "print(logits.argmax(1).tolist())\n"))
    result = project.commit()
    assert result.returncode == 1
    assert re.search(r"predict\.py:\d+:\d+: BN003", output(result))


@pytest.mark.skipif("BN003" not in RULES, reason="this bnlint has no BN003 rule")
def test_static_hook_checks_notebooks_too(static_hook, tmp_path):
    config, home = static_hook
    project = Project(tmp_path / "project", home)
    project.configure(config)
    project.write("explore.ipynb", NOTEBOOK)
    result = project.commit()
    assert result.returncode == 1
    assert "explore.ipynb:cell 1:6:11: BN003" in output(result)


# --- GitHub Actions ------------------------------------------------------------------------

def workflow_jobs() -> dict:
    (text,) = blocks("CI (GitHub Actions)", "yaml")
    return yaml.safe_load(text)["jobs"]


def run_bnlint_step(job: dict, project: Project) -> subprocess.CompletedProcess:
    """Run the job's bnlint step as GitHub's default shell would (``bash -e``)."""
    (script,) = [s["run"] for s in job["steps"] if s.get("run", "").startswith("bnlint")]
    return project.run("bash", "-e", "-c", script)


def test_annotations_job_marks_the_flagged_line_and_fails(project):
    project.write("models/vgg.py", VGG)
    project.write("train.py", TRAIN)
    result = run_bnlint_step(workflow_jobs()["annotations"], project)
    assert result.returncode == 1
    assert result.stdout.startswith(f"::warning file=models/vgg.py,line={VGG_LINE},col=21,"
                                    "title=BN001::BN001 ")


def test_code_scanning_job_uploads_findings_and_fails_only_on_errors(project):
    job = workflow_jobs()["code-scanning"]
    assert job["permissions"]["security-events"] == "write"
    (upload,) = [s for s in job["steps"] if "upload-sarif" in s.get("uses", "")]
    sarif_file = project.root / upload["with"]["sarif_file"]

    project.write("models/vgg.py", VGG)
    result = run_bnlint_step(job, project)
    assert result.returncode == 0, output(result)
    (run,) = json.loads(sarif_file.read_text())["runs"]
    (finding,) = run["results"]
    assert finding["ruleId"] == "BN001"
    region = finding["locations"][0]["physicalLocation"]
    assert region["artifactLocation"]["uri"] == "models/vgg.py"
    assert region["region"]["startLine"] == VGG_LINE

    project.write("models/broken.py", "import torch.nn as nn\nimport not_installed_here\n")
    failed = run_bnlint_step(job, project)
    assert failed.returncode != 0
    assert failed.stderr == ("bnlint: error: models/broken.py: import failed: ModuleNotFoundError: "
                             "No module named 'not_installed_here'\n")


# --- [tool.bnlint] -------------------------------------------------------------------------

def test_configuration_reference_lists_every_key_and_built_in_exclusion():
    text = section("Configuration")
    rows = re.findall(r"^\| `(\w[\w-]*)` \|", text, re.M)
    assert rows == list(Config.KEYS)
    for name in DEFAULT_EXCLUDE:
        assert f"`{name}`" in text


def test_configuration_example_does_what_the_reference_says(project):
    example = blocks("Configuration", "toml")[0]
    project.write("pyproject.toml", example)
    settings = load_config(project.root)
    assert (settings.select, settings.ignore, settings.exclude, settings.per_file_ignores) == \
        (["BN00"], ["BN002"], ["experiments", "*_legacy.py"], {"third_party/*": ["BN001"]})

    project.write("models/vgg.py", VGG)
    project.write("models/vgg_legacy.py", VGG)
    project.write("experiments/vgg.py", VGG)
    project.write("third_party/vendored/vgg.py", VGG)
    project.write("models/small.py", (FIXTURES / "act_before_bn.py").read_text())
    result = project.run("bnlint", "--format", "json", ".")
    assert result.returncode == 1, output(result)
    found = [(f["code"], f["path"]) for f in json.loads(result.stdout)["findings"]]
    assert found == [("BN008", os.path.join("models", "small.py")),
                     ("BN001", os.path.join("models", "vgg.py"))]


def test_static_check_imports_neither_torch_nor_the_model_files(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "vgg.py").write_text(VGG)
    code = (
        "import sys\n"
        "from bnlint.cli import main\n"
        "try:\n    main(['--static', 'models/vgg.py', 'models/vgg.py:VGG(\"VGG11\")'])\n"
        "except SystemExit as exit:\n    assert exit.code == 0, exit.code\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
