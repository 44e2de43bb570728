"""BN003 and BN004 across the files of a project: helpers, model methods and classes imported
from other files are read (never run) and followed, through the fixture projects in
fixtures/projects/ and small projects written here."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bnlint.rules.modes import summaries
from bnlint.rules.modes.parsed import ClassInfo
from bnlint.rules.modes.project import Function, Project, search_path
from conftest import FIXTURES, run_bnlint
from rules.conftest import expected_findings

PROJECTS = FIXTURES / "projects"
NAMES = sorted(p.name for p in PROJECTS.iterdir() if p.is_dir())


def findings(folder: Path, *paths: str) -> list[dict]:
    result = run_bnlint(*(paths or ["."]), "--static", "--format", "json", cwd=folder)
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.stdout)["findings"]


def expected(folder: Path) -> list[tuple[str, int, str]]:
    return sorted((str(p.relative_to(folder)), line, code) for p in folder.rglob("*.py")
                  for line, code in expected_findings(p.read_text(encoding="utf-8")))


def write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return folder


@pytest.mark.parametrize("name", NAMES)
def test_each_project_has_exactly_the_expected_findings(name):
    """Every `# expect:` line is reported, and nothing else: the clean twins stay silent."""
    folder = PROJECTS / name
    found = sorted((f["path"], f["line"], f["code"]) for f in findings(folder))
    assert found == expected(folder)


def test_every_project_but_the_pickled_model_has_findings():
    expecting = {p.relative_to(PROJECTS).parts[0] for p in PROJECTS.rglob("*.py")
                 if expected_findings(p.read_text())}
    assert expecting == set(NAMES) - {"pickled"}


def test_messages_name_the_helper_and_the_file_it_is_in():
    folder = PROJECTS / "engine_helpers"
    by_path = {f["path"]: f for f in findings(folder)}
    inference = by_path["predict.py"]["message"]
    assert inference.startswith("`model` runs inference inside a function decorated with "
                                "`@torch.no_grad()` in `predict()` of utils/engine.py")
    assert "set by `Net()` at line 8" in inference
    training = by_path["train.py"]
    assert "set by `model.eval()` at line 23 of utils/engine.py, in `evaluate()` called at " \
           "line 15, on the previous pass of the loop at line 13" in training["message"]
    assert training["related"] == ["evaluate"]


def test_fixes_of_findings_through_helpers(tmp_path):
    folder = tmp_path / "engine_helpers"
    shutil.copytree(PROJECTS / "engine_helpers", folder)
    diff = run_bnlint("predict.py", "train.py", "--diff", "--unsafe-fixes", cwd=folder).stdout
    assert "+model.eval()\n print(predict(model, images).tolist())" in diff
    assert "-model.train()\n for epoch in range(2):\n+    model.train()\n" in diff
    run_bnlint("predict.py", "train.py", "--fix", "--unsafe-fixes", cwd=folder)
    assert findings(folder, "predict.py", "train.py") == []


def test_the_projects_run_as_real_code(tmp_path):
    """Every script runs as it is (with ``src`` on the path for the src layout); where bnlint
    reports an inference in training mode, the model really was in training mode."""
    runs = []
    for name in NAMES:
        folder = tmp_path / name
        shutil.copytree(PROJECTS / name, folder)
        for script in sorted([*folder.glob("*.py"), *folder.glob("scripts/*.py")]):
            paths = [str(script.parent), str(folder / "src")]
            codes = [code for _, code in expected_findings(script.read_text())]
            runs.append((str(folder), paths, str(script), "BN003" in codes))
    runner = textwrap.dedent("""\
        import json, os, runpy, sys
        import torch
        for folder, paths, script, flagged in json.loads(sys.argv[1]):
            os.chdir(folder)
            sys.path[:0] = paths
            names = runpy.run_path(script, run_name="__main__")
            del sys.path[:len(paths)]
            for name, module in list(sys.modules.items()):
                if getattr(module, "__file__", None) and module.__file__.startswith(folder):
                    del sys.modules[name]
            modes = [v.training for v in names.values() if isinstance(v, torch.nn.Module)]
            assert not flagged or any(modes), f"{script}: no model in training mode"
            print("ran", os.path.relpath(script, os.path.dirname(folder)))
    """)
    result = subprocess.run([sys.executable, "-c", runner, json.dumps(runs)],
                            capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("ran ") == len(runs)


# --- following imports ---------------------------------------------------------------------

MODEL = textwrap.dedent("""\
    from torch import nn


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm1d(4)

        def forward(self, x):
            return self.bn(x)
""")
INFER = """\
    import torch
    {imports}

    model = {build}
    with torch.no_grad():
        model(torch.randn(2, 4))  # expect: BN003
"""


@pytest.mark.parametrize("files, imports, build", [
    # a package re-exporting through two __init__.py files
    ({"lib/__init__.py": "from .nets import Net\n", "lib/nets/__init__.py": "from .net import *\n"
      "from .net import Net\n", "lib/nets/net.py": MODEL}, "from lib import Net", "Net()"),
    # a relative import two levels up, inside the package
    ({"pkg/__init__.py": "", "pkg/core/__init__.py": "", "pkg/core/net.py": MODEL,
      "pkg/app/__init__.py": "", "pkg/app/build.py": "from ..core.net import Net\n\n\n"
      "def build():\n    return Net()\n"}, "from pkg.app.build import build", "build()"),
    # import a.b as c, and a module-level factory
    ({"models/__init__.py": "", "models/net.py": MODEL}, "import models.net as arch",
     "arch.Net()"),
    # a namespace package (no __init__.py)
    ({"nets/net.py": MODEL}, "from nets.net import Net", "Net()"),
    # a base class in another file that holds the BatchNorm
    ({"base.py": MODEL, "child.py": "from base import Net\n\n\nclass Child(Net):\n    pass\n"},
     "from child import Child", "Child()"),
])
def test_follows_imports_to_a_model_with_batchnorm(tmp_path, files, imports, build):
    write(tmp_path, {**files, "pyproject.toml": "",
                     "job.py": INFER.format(imports=imports, build=build)})
    found = sorted((f["path"], f["line"], f["code"]) for f in findings(tmp_path))
    assert found == expected(tmp_path)


@pytest.mark.parametrize("files, imports, build", [
    # no BatchNorm anywhere in the class
    ({"mlp.py": "from torch import nn\n\n\nclass MLP(nn.Module):\n    def __init__(self):\n"
      "        super().__init__()\n        self.fc = nn.Linear(4, 4)\n"}, "from mlp import MLP",
     "MLP()"),
    # a class built from a library's: what it holds is unknown until the script shows it
    ({"wrap.py": "import timm_like\nfrom torch import nn\n\n\nclass Wrap(nn.Module):\n"
      "    def __init__(self):\n        super().__init__()\n"
      "        self.body = timm_like.Backbone()\n"}, "from wrap import Wrap", "Wrap()"),
    # a name the project does not define
    ({"lib.py": "VALUE = 1\n"}, "from lib import Net", "Net()"),
    # a helper that puts the model in eval mode
    ({"net.py": MODEL, "prep.py": "def ready(model):\n    return model.eval()\n"},
     "from net import Net\nfrom prep import ready", "ready(Net())"),
    # a helper that hands the model to code outside the project
    ({"net.py": MODEL, "prep.py": "import somewhere\n\n\ndef ready(model):\n"
      "    somewhere.prepare(model)\n    return model\n"},
     "from net import Net\nfrom prep import ready", "ready(Net())"),
    # two files importing each other
    ({"a.py": "from b import build\n", "b.py": "from a import build\n"}, "from a import build",
     "build()"),
])
def test_silent_where_the_project_says_no_batchnorm_or_cannot_say(tmp_path, files, imports,
                                                                     build):
    write(tmp_path, {**files, "pyproject.toml": "", "job.py": INFER.format(
        imports=imports, build=build).replace("  # expect: BN003", "")})
    assert findings(tmp_path) == []


def test_the_root_is_found_above_the_script_and_src_is_searched(tmp_path):
    write(tmp_path, {"setup.cfg": "", "src/acme/__init__.py": "", "src/acme/net.py": MODEL,
                     "tools/deep/job.py": INFER.format(imports="from acme.net import Net",
                                                       build="Net()")})
    assert search_path(tmp_path / "tools/deep/job.py") == (
        tmp_path / "tools/deep", tmp_path, tmp_path / "src")
    assert [f["line"] for f in findings(tmp_path)] == [6]
    (tmp_path / "setup.cfg").unlink()  # no root marker: only the script's folder
    assert findings(tmp_path / "tools" / "deep") == []


def test_project_resolution(tmp_path):
    write(tmp_path, {"pyproject.toml": "", "app/__init__.py": "from .models import Net as Model\n",
                     "app/models.py": MODEL + "\n\ndef build():\n    return Net()\n",
                     "app/cli.py": "from . import models\n"})
    project = Project(search_path(tmp_path / "job.py"))
    cli = project.parsed(tmp_path / "app/cli.py")
    assert isinstance(project.resolve("app.Model", cli), ClassInfo)
    assert project.resolve("app.Model", cli).name == "Net"
    build = project.resolve(".models.build", cli)
    assert isinstance(build, Function) and build.node.name == "build"
    assert project.resolve("app.missing", cli) is None
    assert project.resolve("torch.nn.Module", cli) is None
    assert project.holds_batchnorm(project.resolve("app.Model", cli)) is True


def test_each_file_is_read_once_per_run_and_again_when_it_changes(tmp_path):
    helper = "import torch\n\n\n@torch.no_grad()\ndef predict(model, x):\n{body}" \
             "    return model(x)\n"
    scripts = {f"job{i}.py": "import torch\nfrom net import Net\nfrom helper import predict\n\n"
               "model = Net()\npredict(model, torch.randn(2, 4))  # expect: BN003\n"
               for i in range(4)}
    write(tmp_path, {"pyproject.toml": "", "net.py": MODEL,
                     "helper.py": helper.format(body=""), **scripts})
    assert len(findings(tmp_path)) == 4
    cache = summaries.for_script(tmp_path / "job0.py").project
    assert cache.parses == len(cache.files) == 2  # net.py and helper.py, once each

    (tmp_path / "helper.py").write_text(helper.format(body="    model.eval()\n"))
    assert findings(tmp_path) == []


def test_the_same_script_in_two_projects_is_checked_in_each(tmp_path):
    """Same text, same file name, another project (and another working directory): its own
    helper decides, and other files are named from where bnlint runs."""
    job = "import torch\nfrom net import Net\nfrom helper import predict\n\n" \
          "predict(Net(), torch.randn(2, 4))\n"
    helper = "import torch\n\n\n@torch.no_grad()\ndef predict(model, x):\n{body}" \
             "    return model(x)\n"
    for name, body in (("a", ""), ("b", "    model.eval()\n")):
        write(tmp_path / name, {"pyproject.toml": "", "net.py": MODEL, "job.py": job,
                                "helper.py": helper.format(body=body)})
    [finding] = findings(tmp_path / "a", "job.py")
    assert "in `predict()` of helper.py" in finding["message"]
    assert findings(tmp_path / "b", "job.py") == []
    [finding] = findings(tmp_path, "a/job.py")
    assert f"in `predict()` of {Path('a', 'helper.py')}" in finding["message"]
