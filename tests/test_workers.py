"""Repository runs: models checked in worker processes, under time and memory limits, with the
same report whatever the number of jobs."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bnlint.workers import parse_size
from conftest import FIXTURES, ROOT, run_bnlint

HERE = Path(__file__).resolve().parent / "repository"


@pytest.fixture
def repo(tmp_path):
    """A folder of model files, as a repository has them; ``add(name)`` copies one in."""
    def add(*names):
        for name in names:
            source = HERE / name if (HERE / name).exists() else FIXTURES / name
            shutil.copy(source, tmp_path / name)
        return tmp_path
    return add


def report(result) -> dict:
    return json.loads(result.stdout)


def by_spec(data: dict) -> dict:
    return {m["spec"]: m for m in data["models"]}


def test_jobs_change_nothing_in_the_report(repo):
    folder = repo("act_before_bn.py", "wrong_axis.py", "small_cnn.py")
    for fmt in ("json", "text"):
        one = run_bnlint(".", "--jobs", "1", "--format", fmt, cwd=folder)
        two = run_bnlint(".", "--jobs", "2", "--format", fmt, cwd=folder)
        assert one.exit_code == two.exit_code == 1
        assert one.stdout == two.stdout
        if fmt == "json":
            assert set(report(two)["summary"]["by_code"]) == {"BN001", "BN002", "BN006",
                                                              "BN008"}


def test_workers_keep_the_fix_marks_a_run_in_one_process_gives():
    """fixtures/vgg.py's conv call builds layers whose bias is dead and layers whose bias is
    not: the fix planner, fed by the workers, must find that as it does in one process."""
    alone = run_bnlint("fixtures/vgg.py", "--format", "json", cwd=ROOT)
    workers = run_bnlint("fixtures/vgg.py", "--jobs", "2", "--format", "json", cwd=ROOT)
    assert alone.stdout == workers.stdout
    assert alone.exit_code == workers.exit_code == 1


def test_a_model_over_a_limit_is_an_error_naming_it_and_the_run_goes_on(repo):
    folder = repo("hang.py", "hog.py", "small_cnn.py")
    result = run_bnlint(".", "--jobs", "2", "--model-timeout", "8", "--model-memory", "1G",
                        "--format", "json", cwd=folder)
    assert result.exit_code == 2, result.output
    models = by_spec(report(result))
    assert models["hang.py:Stuck()"]["status"] == "error"
    assert "--model-timeout 8 s" in models["hang.py:Stuck()"]["reason"]
    assert models["hog.py:Hog()"]["status"] == "error"
    assert "--model-memory 1.0G" in models["hog.py:Hog()"]["reason"]
    # the worker that was replaced went on with the file's next model, and the other file ran
    for spec in ("hog.py:AfterHog()", "small_cnn.py:Biased()", "small_cnn.py:Clean()"):
        assert models[spec]["status"] == "ok"
    assert [f["model"] for f in report(result)["findings"]] == [
        "hog.py:AfterHog()", "small_cnn.py:Biased()"]


def test_a_worker_that_dies_costs_its_model_only(repo):
    folder = repo("small_cnn.py")
    (folder / "crash.py").write_text(
        "import os\nimport torch.nn as nn\n\n\nclass Crash(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        os._exit(3)\n")
    result = run_bnlint(".", "--format", "json", cwd=folder)
    models = by_spec(report(result))
    assert "worker process died (exit status 3)" in models["crash.py:Crash()"]["reason"]
    assert models["small_cnn.py:Biased()"]["status"] == "ok"
    assert result.exit_code == 2


def test_jsonl_findings_reach_the_output_file_as_they_are_found(repo, tmp_path):
    folder = repo("small_cnn.py", "hang.py")
    out = tmp_path / "findings.jsonl"
    command = [sys.executable, "-m", "bnlint", ".", "--jobs", "2", "--format", "jsonl",
               "-o", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, cwd=folder, env=env, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (out.exists() and out.read_text().endswith("\n")):
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.2)
    finally:  # the run is stuck on hang.py: kill it, as a CI job's timeout would
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    [line] = out.read_text().splitlines()
    finding = json.loads(line)
    assert (finding["code"], finding["model"]) == ("BN001", "small_cnn.py:Biased()")


def test_jsonl_is_one_finding_a_line_as_json_has_them(repo, tmp_path):
    folder = repo("small_cnn.py", "vgg.py")
    whole = report(run_bnlint(".", "--format", "json", cwd=folder))
    result = run_bnlint(".", "--format", "jsonl", "-o", tmp_path / "out.jsonl", cwd=folder)
    assert result.exit_code == 1
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == whole["findings"]


def test_verbose_logs_each_model_as_it_finishes(repo):
    folder = repo("small_cnn.py", "factories.py")
    result = run_bnlint(".", "-v", "--format", "json", cwd=folder)
    assert "small_cnn.py:Biased(): analysed (1 finding, " in result.stderr
    assert "factories.py:wide_large(): analysed (1 finding, " in result.stderr


def test_verbose_gives_each_models_own_peak_memory(repo):
    """The peak is the worker's while it built and analysed that model, not the worker's
    highest so far: a small model checked after a large one shows its own, which is how a
    user finds the model to give --model-memory for."""
    folder = repo("small_cnn.py")
    (folder / "big.py").write_text(
        "import torch.nn as nn\n\n\nclass Big(nn.Module):\n    def __init__(self):\n"
        "        super().__init__()\n        table = bytearray(b'\\x01' * (600 * 2**20))\n"
        "        self.size = len(table)\n        self.conv = nn.Conv2d(3, 8, 3)\n\n"
        "    def forward(self, x):\n        return self.conv(x)\n")
    result = run_bnlint("big.py", "small_cnn.py", "-v", "--jobs", "1", "--format", "json",
                        cwd=folder)
    peaks = {}
    for line in result.stderr.splitlines():
        if ", peak memory " in line:
            spec, size = line.split(": ")[0], line.rsplit("peak memory ", 1)[1].rstrip(")")
            peaks[spec] = parse_size(size)
    assert set(peaks) == {"big.py:Big()", "small_cnn.py:Biased()", "small_cnn.py:Clean()"}
    assert peaks["big.py:Big()"] > 600 * 2**20
    assert peaks["small_cnn.py:Clean()"] < peaks["big.py:Big()"] - 400 * 2**20


def test_the_summary_counts_the_models_of_each_file(repo):
    folder = repo("small_cnn.py", "factories.py")
    result = run_bnlint(".", "--format", "concise", cwd=folder)
    # the instance and the factory returning it are one model
    assert "Models checked per file: factories.py 4, small_cnn.py 2." in result.stdout
    assert report(run_bnlint(".", "--format", "json", cwd=folder))["summary"][
        "models_by_file"] == {"factories.py": 4, "small_cnn.py": 2}


LAYERS = {"a": "def block():\n    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))\n",
          "b": "def block():\n    return nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.BatchNorm1d(4))\n"}


@pytest.mark.parametrize("package", [False, True], ids=["module", "package"])
@pytest.mark.parametrize("jobs", ["1", "2"])
def test_each_folder_imports_its_own_sibling_of_a_shared_name(tmp_path, package, jobs):
    """Two experiments, each with its own ``layers`` beside its model: each model is built
    from its own, as running either file on its own would, whichever file a worker took first."""
    for folder, layers in LAYERS.items():
        (tmp_path / folder).mkdir()
        target = tmp_path / folder / ("layers/__init__.py" if package else "layers.py")
        target.parent.mkdir(exist_ok=True)
        target.write_text("import torch.nn as nn\n\n\n" + layers)
        (tmp_path / folder / "model.py").write_text(
            "import torch.nn as nn\nfrom layers import block\n\n\n"
            f"class {folder.upper()}(nn.Module):\n    def __init__(self):\n"
            "        super().__init__()\n        self.body = block()\n\n"
            "    def forward(self, x):\n        return self.body(x)\n")
    result = run_bnlint(".", "--jobs", jobs, "--format", "json", cwd=tmp_path)
    models = by_spec(report(result))
    assert models["a/model.py:A()"]["status"] == models["b/model.py:B()"]["status"] == "ok"
    layers = "layers/__init__.py" if package else "layers.py"
    found = {(f["path"], f["code"]) for f in report(result)["findings"]}
    assert found == {(f"a/{layers}", "BN001"), (f"b/{layers}", "BN002")}
    assert result.exit_code == 1


def test_one_per_class_checks_the_first_model_of_each_class(repo):
    folder = repo("small_cnn.py", "factories.py")
    models = by_spec(report(run_bnlint(".", "--one-per-class", "--format", "json", cwd=folder)))
    assert models["factories.py:shared"]["status"] == "ok"
    for spec in ("factories.py:wide_small()", "factories.py:wide_medium()"):
        assert models[spec]["status"] == "skipped"
        assert models[spec]["reason"] == "a Wide was checked already (--one-per-class)"
    assert models["small_cnn.py:Clean()"]["status"] == "ok"
    assert "factories.py:shared_model()" not in models


def test_classes_that_need_arguments_are_built_as_the_file_builds_them(repo):
    folder = repo("needs_args.py", "small_cnn.py")
    data = report(run_bnlint(".", "--format", "json", cwd=folder))
    models = by_spec(data)
    # the first call of test() fails (no "large" configuration): the next one is used
    assert models["needs_args.py:TinyVGG('tiny')"]["status"] == "ok"
    assert models["needs_args.py:Head(32, 10)"]["status"] == "ok"  # from partial(Head, 32, 10)
    assert models["needs_args.py:Unused"]["status"] == "skipped"
    assert "needs arguments (size)" in models["needs_args.py:Unused"]["reason"]
    assert "needs_args.py:Unused(bias=False)" not in models
    assert {f["model"] for f in data["findings"] if f["path"] == "needs_args.py"} == {
        "needs_args.py:TinyVGG('tiny')", "needs_args.py:Head(32, 10)"}


def test_per_file_ignores_and_unused_suppressions_work_in_workers(repo):
    folder = repo("small_cnn.py", "vgg.py")
    (folder / "pyproject.toml").write_text(
        '[tool.bnlint]\nper-file-ignores = { "vgg.py" = ["BN001"] }\n')
    text = (folder / "small_cnn.py").read_text()
    text = text.replace("nn.Conv2d(3, 8, 3, padding=1)\n",
                        "nn.Conv2d(3, 8, 3, padding=1)  # bnlint: ignore[BN001]\n", 1)
    text = text.replace("padding=1, bias=False)", "padding=1, bias=False)  # noqa: BN001")
    (folder / "small_cnn.py").write_text(text)
    for jobs in ("1", "2"):
        data = report(run_bnlint(".", "--select", "BN001,BN900", "--jobs", jobs,
                                 "--format", "json", cwd=folder))
        assert [(f["code"], f["path"]) for f in data["findings"]] == [
            ("BN900", "small_cnn.py")], jobs


def test_stdin_is_checked_by_a_worker_as_the_file_it_stands_for():
    text = (HERE / "small_cnn.py").read_bytes()
    alone = run_bnlint("-", "--stdin-filename", "tests/repository/small_cnn.py",
                       "--format", "json", cwd=ROOT, input=text)
    worker = run_bnlint("-", "--stdin-filename", "tests/repository/small_cnn.py", "--jobs", "2",
                        "--format", "json", cwd=ROOT, input=text)
    assert alone.stdout == worker.stdout
    assert report(worker)["findings"][0]["path"] == "tests/repository/small_cnn.py"


@pytest.mark.parametrize("args, message", [
    (["--fix", "--jobs", "2"], "run in one process"),
    (["--model-memory", "lots"], "is not a size"),
])
def test_worker_options_are_checked(args, message):
    result = run_bnlint("fixtures/vgg.py", *args, cwd=ROOT)
    assert result.exit_code == 2
    assert message in result.output
