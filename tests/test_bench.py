"""The training benchmark: the verdict and its rule, reproducibility, the synthetic task, the
input shape, the user's models left alone, the output (table, JSON, plot) and the CLI."""

import copy
import json
import math

import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner

import bnlint
from bnlint import bench, render_bench
from bnlint.bench import IMPROVED, NEUTRAL, WORSE, BenchError, decide
from bnlint.cli import main
from fixtures_models import fixture_module

QUICK = dict(steps=100, seeds=2, lr=0.01, time_budget=None)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The models here are tiny: one thread trains them fastest, and results stay the same
    whatever the machine's core count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def deep_mlp():
    """The BN005 fixture and its fix: BatchNorm after every hidden layer."""
    model = fixture_module("deep_plain").DeepMLP()
    return model, bnlint.fix(model, select=["BN005"], unsafe=True).model


def test_public_api():
    assert bnlint.benchmark is bench.benchmark


# --- the verdict rule, on controlled numbers ---------------------------------------------------

@pytest.mark.parametrize("original, fixed, verdict", [
    ([2.0, 2.1, 1.9], [1.0, 1.2, 0.9], IMPROVED),
    ([1.0, 1.0, 1.0], [1.0, 1.0, 1.0], NEUTRAL),
    ([1.0, 1.2, 0.9], [2.0, 2.1, 1.9], WORSE),
    # better on average, but not in every seed: no measurable difference
    ([2.0, 2.0, 1.0], [1.0, 1.0, 1.1], NEUTRAL),
    # lower in every seed, but by less than 5%
    ([1.00, 1.00, 1.00], [0.97, 0.98, 0.99], NEUTRAL),
    # a diverged run (inf) loses to any finite one; both diverged is a tie
    ([math.inf, math.inf], [1.5, 2.0], IMPROVED),
    ([1.5, 2.0], [math.inf, 1.0], NEUTRAL),
    ([1.0, 1.1], [math.inf, math.inf], WORSE),
    ([math.inf], [math.inf], NEUTRAL),
])
def test_verdict_rule(original, fixed, verdict):
    assert decide(original, fixed, start=2.3)[0] == verdict


def test_losses_below_one_percent_of_the_start_count_as_solved_by_both():
    assert decide([1e-3, 2e-3], [1e-5, 1e-6], start=2.3) == (NEUTRAL, 1.0)
    assert decide([0.5, 0.6], [1e-5, 1e-6], start=2.3)[0] == IMPROVED


def test_ratio_is_the_geometric_mean_of_per_seed_ratios():
    verdict, ratio = decide([1.0, 4.0], [0.5, 1.0], start=10)
    assert verdict == IMPROVED and ratio == pytest.approx(math.sqrt(0.5 * 0.25))


def test_steps_to_target_uses_the_running_mean_of_the_final_window():
    losses = [5.0, 4.0, 3.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0] * 2
    assert bench.window(20) == 2
    assert bench.final_loss(losses, False, 20) == 1.0
    assert bench.steps_to(losses, 1.0, 20) == 6      # mean of steps 5 and 6 is 1.0
    assert bench.steps_to(losses, 2.5, 20) == 4      # mean of 3.0 and 2.0
    assert bench.steps_to(losses, 0.5, 20) is None
    assert bench.final_loss(losses[:3], True, 20) == math.inf


# --- real training: a fix that helps, one that changes nothing, one that hurts -----------------

def test_batchnorm_in_a_deep_plain_mlp_is_an_improvement(deep_mlp):
    report = bench.benchmark(*deep_mlp, **QUICK)
    assert report.verdict == IMPROVED
    assert report.ratio < 0.9
    original, fixed = report.variants
    assert all(f < o for o, f in zip(original.finals, fixed.finals))
    # the fix adds BatchNorm (weight and bias per channel) and drops the layers' biases
    assert fixed.params == original.params + 8 * 128
    assert report.settings["tensors"] == {"shared": 10, "added": 40, "removed": 8}
    assert report.task.describe() == (
        "synthetic classification, 10 classes; input (64,) from INPUT_SHAPE")


def test_removing_batchnorm_is_worse(deep_mlp):
    plain, with_bn = deep_mlp
    report = bench.benchmark(with_bn, plain, **QUICK)
    assert report.verdict == WORSE and report.ratio > 1.1


def test_a_fix_that_changes_nothing_is_no_measurable_difference(deep_mlp):
    model = deep_mlp[0]
    report = bench.benchmark(model, copy.deepcopy(model), steps=30, seeds=2, time_budget=None)
    assert report.verdict == NEUTRAL and report.ratio == 1.0
    original, fixed = report.variants
    assert [r.losses for r in original.runs] == [r.losses for r in fixed.runs]


def test_the_safe_bn001_fix_trains_the_same():
    """Dropping a bias that BatchNorm cancels leaves training as it was: the benchmark must
    not invent a difference."""
    model = fixture_module("vgg").vgg11_small()
    fixed = bnlint.fix(model, select=["BN001"]).model
    report = bench.benchmark(model, fixed, steps=20, seeds=2, time_budget=None)
    assert report.verdict == NEUTRAL
    assert report.ratio == pytest.approx(1.0, abs=0.01)
    assert report.fixed.params < report.original.params
    assert report.task.shape_from == "found by probing" and report.task.input_shape == (3, 32, 32)


def test_same_result_twice(deep_mlp):
    first = bench.benchmark(*deep_mlp, steps=30, seeds=2, time_budget=None).to_dict()
    second = bench.benchmark(*deep_mlp, steps=30, seeds=2, time_budget=None).to_dict()
    for report in (first, second):
        for variant in report["variants"].values():
            variant.pop("step_ms")
            for run in variant["runs"]:
                run.pop("step_ms")
    assert first == second


def test_lr_sweep_finds_the_largest_learning_rate_that_trains(deep_mlp):
    report = bench.benchmark(*deep_mlp, steps=100, seeds=1, lr_sweep=True, time_budget=None)
    original, fixed = report.variants
    for variant in report.variants:
        assert [p.lr for p in variant.sweep] == list(bench.LR_GRID[:len(variant.sweep)])
        trained = [p.lr for p in variant.sweep if p.trains]
        assert variant.max_stable_lr == (max(trained) if trained else None)
    # BatchNorm is what lets the deep MLP train at all in a short run
    assert fixed.max_stable_lr is not None
    assert original.max_stable_lr is None or original.max_stable_lr < fixed.max_stable_lr
    assert report.settings["lr_sweep"]["steps"] == 50


def test_time_budget_cuts_every_run_alike_and_says_so(deep_mlp):
    report = bench.benchmark(*deep_mlp, steps=5000, seeds=1, time_budget=0.5)
    assert report.settings["steps"] < 5000
    assert all(len(r.losses) == report.settings["steps"] for v in report.variants for r in v.runs)
    assert any("--time-budget" in note for note in report.notes)


def test_divergence_is_recorded_not_raised(deep_mlp):
    report = bench.benchmark(*deep_mlp, steps=30, seeds=1, lr=1e6, time_budget=None)
    assert all(r.diverged and r.final == math.inf for v in report.variants for r in v.runs)
    assert report.verdict == NEUTRAL
    assert report.to_dict()["variants"]["original"]["final_loss"]["mean"] is None


# --- the user's models are left alone ----------------------------------------------------------

def test_benchmark_and_probing_leave_the_users_models_untouched():
    vgg = fixture_module("vgg")
    model = vgg.vgg11_small().eval()
    fixed = bnlint.fix(model, select=["BN001"]).model.train()
    before = [copy.deepcopy(m.state_dict()) for m in (model, fixed)]
    bench.benchmark(model, fixed, steps=3, seeds=1, time_budget=None)
    assert not model.training and fixed.training
    for m, state in zip((model, fixed), before):
        after = m.state_dict()
        assert all(torch.equal(state[k], after[k]) for k in state)  # running stats included


# --- the input shape ---------------------------------------------------------------------------

def conv1d_net():
    return nn.Sequential(nn.Conv1d(2, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(),
                         nn.Linear(4, 3))


@pytest.mark.parametrize("model, shape", [
    (fixture_module("vgg").vgg11_small(), (3, 32, 32)),
    (fixture_module("act_before_bn").SmallNet(), (3, 32, 32)),
    (conv1d_net(), (2, 128)),
    (nn.Sequential(nn.Linear(7, 2)), (7,)),
])
def test_probing_finds_a_shape_the_model_accepts(model, shape):
    found, origin, out = bench.find_input_shape(model, None, torch.device("cpu"))
    assert (found, origin) == (shape, "found by probing")


def test_a_declared_or_given_shape_wins():
    model = fixture_module("deep_plain").PlainCNN()
    assert bench.find_input_shape(model, None, "cpu")[:2] == ((3, 32, 32), "from INPUT_SHAPE")
    assert bench.find_input_shape(model, (3, 16, 16), "cpu")[:2] == (
        (3, 16, 16), "from --input-shape")
    with pytest.raises(BenchError, match=r"does not accept inputs of shape \(N, 5, 16, 16\)"):
        bench.find_input_shape(model, (5, 16, 16), "cpu")


def test_no_shape_found_says_what_to_do():
    model = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(8, 2))
    with pytest.raises(BenchError, match="--input-shape"):
        bench.find_input_shape(model, None, "cpu")


@pytest.mark.parametrize("head, kind, classes", [
    (nn.Linear(8, 5), bench.CLASSIFICATION, 5),
    (nn.Linear(8, 100), bench.CLASSIFICATION, bench.MAX_CLASSES),
    (nn.Linear(8, 1), bench.REGRESSION, None),
])
def test_task_follows_the_output_shape(head, kind, classes):
    task = bench.synthetic_task(nn.Sequential(nn.Linear(4, 8), head), (4,), "cpu")
    assert (task.kind, task.classes) == (kind, classes)


# --- the synthetic data ------------------------------------------------------------------------

def fit(model, task, steps=300):
    data = bench.SyntheticData(task, 64, seed=0).batches()
    loss_fn = bench.loss_function(task)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        x, y = next(data)
        loss = loss_fn(model(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return next(bench.SyntheticData(task, 512, seed=0).batches())


def test_synthetic_classification_is_learnable_and_balanced():
    torch.manual_seed(0)
    task = bench.Task(bench.CLASSIFICATION, (3, 8, 8), (4,), "", bench.SYNTHETIC, classes=4)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(256, 4))
    x, y = fit(model, task)
    assert torch.bincount(y, minlength=4).min() > 512 / 4 / 3  # every class turns up
    accuracy = (model.eval()(x).argmax(1) == y).float().mean()
    assert accuracy > 0.6  # chance is 0.25


def test_synthetic_regression_is_learnable():
    torch.manual_seed(0)
    task = bench.Task(bench.REGRESSION, (32,), (3,), "", bench.SYNTHETIC)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 3))
    x, y = fit(model, task)
    assert y.shape == (512, 3) and y.var().item() == pytest.approx(1.0, rel=0.3)
    with torch.no_grad():
        assert nn.functional.mse_loss(model(x), y) < 0.3 * y.var()


def test_synthetic_batches_are_fixed_by_the_seed():
    task = bench.Task(bench.CLASSIFICATION, (3, 8, 8), (10,), "", bench.SYNTHETIC, classes=10)

    def first(seed):
        return next(bench.SyntheticData(task, 8, seed).batches())

    assert all(torch.equal(a, b) for a, b in zip(first(1), first(1)))
    assert not torch.equal(first(1)[0], first(2)[0])


# --- the user's data ---------------------------------------------------------------------------

def test_user_tensors_train_both_models_on_the_same_batches(deep_mlp):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(256, 64, generator=generator)
    y = (x[:, :10].argmax(1))
    report = bench.benchmark(deep_mlp[0], copy.deepcopy(deep_mlp[0]), data=lambda: (x, y),
                             steps=20, seeds=1, time_budget=None)
    assert report.task.kind == bench.CLASSIFICATION and report.task.data == "the given data"
    assert report.original.runs[0].losses == report.fixed.runs[0].losses


def test_user_data_that_is_not_batches_is_a_clear_error(deep_mlp):
    with pytest.raises(BenchError, match="DataLoader"):
        bench.benchmark(*deep_mlp, data=lambda: 42, steps=2, seeds=1)


# --- output ------------------------------------------------------------------------------------

def test_sparkline_shares_the_scale_of_the_curves_compared():
    assert render_bench.sparkline([1, 2, 3, 4], lo=1, hi=4) == "▁▃▆█"
    assert render_bench.sparkline([1, 1], lo=1, hi=8) == "▁▁"
    assert len(render_bench.sparkline(list(range(100)), lo=0, hi=99)) == render_bench.SPARK_WIDTH


@pytest.fixture(scope="module")
def entry(deep_mlp):
    return bench.bench_model("deep_plain.py:DeepMLP()", deep_mlp[0], select=["BN005"],
                             steps=20, seeds=2, time_budget=None)


def test_plot_file(entry, tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "curves.png"
    render_bench.write_plot([entry], path)
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_cli_bench_text_shows_the_table_the_verdict_and_its_rule(tmp_path):
    pytest.importorskip("matplotlib")
    plot = tmp_path / "curves.png"
    result = run("fixtures/deep_plain.py:DeepMLP()", "--select", "BN005", "--bench",
                 "--steps", "20", "--seeds", "2", "--lr", "0.01", "--plot", str(plot))
    assert result.exit_code == 1, result.output  # findings, as without --bench
    assert plot.read_bytes().startswith(b"\x89PNG") and f"written to {plot}" in result.stderr
    text = result.output
    assert "Benchmark of fixtures/deep_plain.py:DeepMLP()" in text
    assert "BN005 ×8" in text and "input (64,) from INPUT_SHAPE" in text
    rows = [line.split() for line in text.splitlines() if line.split()[:1] in (["original"],
                                                                               ["fixed"])]
    assert len(rows) == 2 and all(set(row[-1]) <= set(render_bench.SPARKS) for row in rows)
    assert "rule: final loss = mean training loss over the last 2 steps" in text


def test_cli_bench_json_has_curves_and_settings():
    result = run("fixtures/deep_plain.py:DeepMLP()", "--select", "BN005", "--bench",
                 "--steps", "20", "--seeds", "2", "--format", "json")
    data = json.loads(result.stdout)
    [entry] = data["benchmarks"]
    assert entry["model"] == "fixtures/deep_plain.py:DeepMLP()" and len(entry["fixes"]) == 8
    report = entry["benchmark"]
    assert report["verdict"] in (IMPROVED, NEUTRAL, WORSE) and "rule" in report
    assert report["settings"]["steps"] == 20 and report["settings"]["seeds"] == 2
    runs = report["variants"]["fixed"]["runs"]
    assert [r["seed"] for r in runs] == [0, 1] and all(len(r["losses"]) == 20 for r in runs)
    assert data["summary"]["by_code"] == {"BN005": 1}  # one line builds all eight layers


def test_cli_bench_model_without_fixes_is_not_run():
    result = run("fixtures/clean.py:ResNetTiny()", "--bench")
    assert result.exit_code == 0 and "Benchmark of" not in result.output
    assert "Nothing to benchmark: no model has a finding with a fix." in result.output


@pytest.mark.parametrize("option, message", [
    (["--input-shape", "5,8,8"], "does not accept inputs of shape (N, 5, 8, 8)"),
    (["--data", "missing.py:batches"], "bnlint: error: --data missing.py:batches: no such file"),
    (["--data", "missing.py"], "give module:function"),
])
def test_cli_bench_errors_are_one_line(option, message):
    result = run("fixtures/deep_plain.py:PlainCNN()", "--select", "BN005", "--bench", *option)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("args, message", [
    (["--steps", "10"], "--steps goes with --bench"),
    (["--bench", "--format", "sarif"], "--bench reports as text or json"),
    (["--bench", "--fix"], "--bench"),
    (["--bench", "--input-shape", "3,x"], "--input-shape"),
])
def test_cli_bench_usage_errors(args, message):
    result = run("fixtures/deep_plain.py", *args)
    assert result.exit_code == 2 and message in result.output


def test_cli_plot_without_matplotlib_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)
    result = run("fixtures/deep_plain.py", "--bench", "--plot", "out.png")
    assert result.exit_code == 2
    assert "pip install 'bnlint[plot]'" in result.output


def test_cli_data_option(tmp_path):
    (tmp_path / "data.py").write_text(
        "import torch\n\n"
        "def tensors():\n"
        "    x = torch.randn(128, 64)\n"
        "    return x, x[:, :10].argmax(1)\n")
    result = run("fixtures/deep_plain.py:DeepMLP()", "--select", "BN005", "--bench",
                 "--steps", "10", "--seeds", "1", "--data", f"{tmp_path / 'data.py'}:tensors",
                 "--format", "json")
    report = json.loads(result.stdout)["benchmarks"][0]["benchmark"]
    assert report["task"]["data"].endswith("data.py:tensors")
    assert report["task"]["kind"] == "classification"
    assert report["task"]["shape_from"] == "from the data"
