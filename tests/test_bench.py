"""The training benchmark: the verdict and its rule, reproducibility, the synthetic task, the
input shape, the user's models left alone, the output (table, JSON, plot) and the CLI."""

import copy
import io
import json
import math
import os
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager

import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner

import bnlint
from bnlint import bench, cli
from bnlint.bench import BenchError, measure, render, results, tasks, training, verdict
from bnlint.bench.verdict import IDENTICAL, IMPROVED, NEITHER, NEUTRAL, WORSE, decide
from bnlint.cli import main
from fixtures_models import fixture_module

QUICK = dict(steps=100, seeds=2, lr=0.01)


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


def test_the_command_line_and_the_results_do_not_import_torch():
    code = ("import sys\n"
            "from bnlint.cli import main\n"
            "import bnlint.bench, bnlint.bench.results, bnlint.bench.render\n"
            "try:\n"
            "    main(['--help'])\n"
            "except SystemExit:\n"
            "    pass\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "--time-budget" in done.stdout


# --- the verdict rule, on controlled numbers ---------------------------------------------------

@pytest.mark.parametrize("original, fixed, verdict", [
    ([2.0, 2.1, 1.9], [1.0, 1.2, 0.9], IMPROVED),
    ([1.0, 1.0, 1.0], [1.0, 1.0, 1.0], NEUTRAL),
    ([1.0, 1.2, 0.9], [2.0, 2.1, 1.9], WORSE),
    # better on average, but not in every seed: no measurable difference
    ([2.0, 2.0, 1.0], [1.0, 1.0, 1.1], NEUTRAL),
    # lower in every seed, but by less than 5%
    ([1.00, 1.00, 1.00], [0.97, 0.98, 0.99], NEUTRAL),
    # a run that did not train (inf) loses to any that did; in a seed where neither
    # trained there is no difference; when no run trained, nothing is compared
    ([math.inf, math.inf], [1.5, 2.0], IMPROVED),
    ([1.5, 2.0], [math.inf, 1.0], NEUTRAL),
    ([1.0, 1.1], [math.inf, math.inf], WORSE),
    ([math.inf, 1.0], [math.inf, 0.5], NEUTRAL),
    ([math.inf], [math.inf], NEITHER),
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
    assert verdict.window(20) == 2
    assert verdict.final_loss(losses, False, 20) == 1.0
    assert verdict.steps_to(losses, 1.0, 20) == 6      # mean of steps 5 and 6 is 1.0
    assert verdict.steps_to(losses, 2.5, 20) == 4      # mean of 3.0 and 2.0
    assert verdict.steps_to(losses, 0.5, 20) is None
    assert verdict.final_loss(losses[:3], True, 20) == math.inf


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


def test_a_fix_that_changes_nothing_is_verified_not_trained(deep_mlp):
    model = deep_mlp[0]
    report = bench.benchmark(model, copy.deepcopy(model), steps=30, seeds=2)
    assert report.verdict == IDENTICAL and not report.trained
    assert report.equivalence.identical and report.equivalence.max_error == 0.0
    assert report.to_dict()["equivalence"]["inputs"] == 3 * 32 + 256


def test_a_fix_that_changes_nothing_trains_alike_when_asked(deep_mlp):
    model = deep_mlp[0]
    report = bench.benchmark(model, copy.deepcopy(model), steps=30, seeds=2, lr=0.01,
                             exact=True)
    assert report.verdict == NEITHER and report.trained  # the plain MLP learns nothing here
    original, fixed = report.variants
    assert [r.losses for r in original.runs] == [r.losses for r in fixed.runs]


def test_the_safe_bn001_fix_is_verified_as_the_same_function():
    """Dropping a bias that BatchNorm cancels leaves the function as it was: the outputs
    match within float rounding, in training mode over SGD steps and in eval mode after."""
    model = fixture_module("vgg").vgg11_small()
    fixed = bnlint.fix(model, select=["BN001"]).model
    report = bench.benchmark(model, fixed, steps=20, seeds=2)
    assert report.verdict == IDENTICAL
    eq = report.equivalence
    assert eq.identical and 0 < eq.max_error <= eq.tolerance < 1e-3
    assert report.fixed.params < report.original.params
    assert report.task.shape_from == "found by probing" and report.task.input_shape == (3, 32, 32)


def test_the_safe_bn001_fix_trains_the_same_with_exact():
    """Trained anyway (--bench-exact), the benchmark must not invent a difference."""
    model = fixture_module("vgg").vgg11_small()
    fixed = bnlint.fix(model, select=["BN001"]).model
    report = bench.benchmark(model, fixed, steps=20, seeds=2, lr=0.02, exact=True)
    assert report.verdict == NEUTRAL and report.equivalence.identical
    assert report.ratio == pytest.approx(1.0, abs=0.01)


def test_outputs_that_differ_are_trained(deep_mlp):
    report = bench.benchmark(*deep_mlp, steps=20, seeds=1, lr=0.01)
    assert report.trained and not report.equivalence.identical
    assert report.equivalence.max_error > report.equivalence.tolerance


def test_lr_sweep_finds_the_largest_learning_rate_that_trains(deep_mlp):
    report = bench.benchmark(*deep_mlp, steps=100, seeds=1, lr_sweep=True)
    original, fixed = report.variants
    for variant in report.variants:
        assert [p.lr for p in variant.sweep] == list(training.LR_GRID[:len(variant.sweep)])
        trained = [p.lr for p in variant.sweep if p.trains]
        assert variant.max_stable_lr == (max(trained) if trained else None)
    # BatchNorm is what lets the deep MLP train at all in a short run
    assert fixed.max_stable_lr is not None
    assert original.max_stable_lr is None or original.max_stable_lr < fixed.max_stable_lr
    assert report.settings["lr_sweep"]["steps"] == 50


def test_divergence_is_recorded_not_raised(deep_mlp):
    report = bench.benchmark(*deep_mlp, steps=30, seeds=1, lr=1e6)
    assert all(r.diverged and r.final == math.inf for v in report.variants for r in v.runs)
    assert all(r.status == "diverged" for v in report.variants for r in v.runs)
    assert report.verdict == NEITHER
    assert report.to_dict()["variants"]["original"]["final_loss"]["mean"] is None


# --- every measurement, on models whose answer is known ---------------------------------------

SIGMOID = dict(seeds=2, lr_sweep=True, init_scales=(0.1, 10))


@pytest.fixture(scope="module")
def sigmoid():
    """A deep sigmoid MLP, which does not train from PyTorch's defaults, and its BN005 fix
    (BatchNorm before every sigmoid), which does: benchmarked once with every measurement,
    the learning rate left to the range test."""
    model = fixture_module("deep_plain").DeepSigmoidMLP()
    fixed = bnlint.fix(model, select=["BN005"], unsafe=True).model
    return model, fixed, bench.benchmark(model, fixed, **SIGMOID)


def test_a_run_whose_loss_does_not_fall_is_not_training_and_never_averaged(sigmoid):
    report = sigmoid[2]
    original, fixed = report.variants
    assert {r.status for r in original.runs} == {verdict.NOT_TRAINING}
    assert {r.status for r in fixed.runs} == {verdict.TRAINS}
    assert not original.trained and original.final_mean == math.inf
    assert report.to_dict()["variants"]["original"]["final_loss"]["mean"] is None
    assert all(math.isfinite(r.final) for r in original.runs)  # shown per run, in JSON too
    assert report.verdict == IMPROVED and report.ratio == 0.0
    assert any("not averaged or compared" in note for note in report.notes)
    assert "'not training'" in report.rule


def test_the_range_test_picks_the_learning_rate_and_says_why(sigmoid):
    report = sigmoid[2]
    settings = report.settings
    assert settings["lr_from"] == "range test"
    test = settings["lr_range_test"]
    assert settings["lr"] == test["lr"] and len(test["lrs"]) == len(test["losses"])
    # the sigmoid MLP's loss falls at no rate: the fallback, and the report says so
    assert test["lr"] == training.FALLBACK_LR and "fall at no rate" in test["why"]
    assert report.rules["lr"].startswith("a range test on the original")


def test_the_range_test_backs_off_from_the_rate_of_the_lowest_loss(tiny):
    """On a model with BatchNorm, which trains, the loss has a lowest point inside the range."""
    fixed = tiny[1]
    report = bench.benchmark(fixed, copy.deepcopy(fixed), steps=100, seeds=1, compare=False)
    test = report.settings["lr_range_test"]
    smooth = training._smoothed(test["losses"])
    best = test["lrs"][smooth.index(min(smooth))]
    assert report.settings["lr"] == test["lr"] == float(f"{best / training.RANGE_BELOW:.2g}")
    assert training.RANGE[0] < best < training.RANGE[1] and "lowest at lr" in test["why"]


def test_a_given_lr_is_used_as_given(deep_mlp):
    report = bench.benchmark(*deep_mlp, steps=20, seeds=1, lr=0.005)
    assert report.settings["lr"] == 0.005 and report.settings["lr_from"] == "given"
    assert report.settings["lr_range_test"] is None and "lr" not in report.rules


def test_held_out_loss_and_accuracy_in_eval_mode(sigmoid):
    report = sigmoid[2]
    data = report.to_dict()["variants"]
    for name in ("original", "fixed"):
        assert set(data[name]["heldout"]) == {"loss", "accuracy"}
    assert data["fixed"]["heldout"]["accuracy"] > data["original"]["heldout"]["accuracy"] + 0.1
    assert data["fixed"]["heldout"]["loss"] < data["original"]["heldout"]["loss"]
    assert "in eval mode (running statistics)" in report.rules["heldout"]
    assert report.settings["heldout_samples"] == tasks.HELDOUT


def test_held_out_samples_are_evaluated_in_eval_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    model[1].running_mean.fill_(5.0)  # eval mode and training mode give other outputs
    task = results.Task(results.CLASSIFICATION, (4,), (3,), "", results.SYNTHETIC, classes=3)
    x, y = torch.randn(100, 4), torch.randint(0, 3, (100,))
    held = measure.evaluate(copy.deepcopy(model), (x, y), tasks.loss_function(task), task, "cpu")
    with torch.no_grad():
        out = model.eval()(x)
    assert held.loss == pytest.approx(nn.functional.cross_entropy(out, y).item(), rel=1e-5)
    assert held.accuracy == pytest.approx((out.argmax(1) == y).float().mean().item())


def test_the_train_eval_gap_is_held_out_loss_minus_final_training_loss(sigmoid):
    report = sigmoid[2]
    fixed = report.fixed
    assert fixed.gap == pytest.approx(fixed.heldout.loss - fixed.final_mean)
    assert report.original.gap is None  # the original did not train: nothing to compare
    assert report.to_dict()["variants"]["fixed"]["train_eval_gap"] == fixed.gap
    assert "held-out loss (eval mode) minus final training loss" in report.rules["gap"]


def test_the_lr_sweep_runs_every_seed_and_needs_all_of_them(sigmoid):
    report = sigmoid[2]
    original, fixed = report.variants
    for variant in report.variants:
        assert all(len(p.finals) == 2 for p in variant.sweep)
        trained = [p.lr for p in variant.sweep if p.trains]
        assert variant.max_stable_lr == (max(trained) if trained else None)
    assert original.max_stable_lr is None and fixed.max_stable_lr is not None
    data = report.to_dict()["variants"]
    assert data["original"]["max_stable_lr"] is None
    assert data["fixed"]["max_stable_lr"] == fixed.max_stable_lr
    assert "in every one of 2 seeds" in report.rules["lr_sweep"]
    assert report.settings["lr_sweep"]["seeds"] == 2


def test_a_rate_trains_only_when_every_seed_falls_by_the_stated_share_of_the_drop(sigmoid):
    """The bar is the original's drop, when it trained: a seed that falls less fails."""
    model, fixed, _ = sigmoid
    report = bench.benchmark(fixed, copy.deepcopy(fixed), steps=40, seeds=2, lr=0.1,
                             lr_sweep=True, compare=False)
    drop = statistics.fmean(r.losses[0] - r.final for r in report.original.runs)
    assert f"({drop:.3g})" in report.rules["lr_sweep"]
    assert f"{training.SWEEP_DROP:.0%} of the original's drop" in report.rules["lr_sweep"]
    for point in report.fixed.sweep:
        if point.trains:
            assert all(f < math.inf for f in point.finals)


def test_scaled_inits_say_which_still_train(sigmoid):
    report = sigmoid[2]
    original, fixed = report.variants
    assert [p.scale for p in fixed.init_scales] == [0.1, 10]
    assert all(p.status == verdict.TRAINS for p in fixed.init_scales)
    assert original.init_scales[0].status == verdict.NOT_TRAINING  # weights x0.1
    assert fixed.init_scales[1].final < original.init_scales[1].final  # weights x10
    data = report.to_dict()["variants"]["fixed"]["init_scale"]
    assert [d["trains"] for d in data] == [True, True]
    assert "multiplied by the factor" in report.rules["init_scale"]


def test_scaling_multiplies_the_layer_weights_only():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    before = copy.deepcopy(model.state_dict())
    training.scale_weights(model, 10)
    after = model.state_dict()
    assert torch.equal(after["0.weight"], before["0.weight"] * 10)
    assert all(torch.equal(after[k], before[k]) for k in before if k != "0.weight")


def test_time_to_target_in_steps_and_seconds_where_both_train():
    model = fixture_module("vgg").vgg11_small()
    fixed = bnlint.fix(model, select=["BN001"]).model
    report = bench.benchmark(model, fixed, steps=20, seeds=2, lr=0.05, exact=True)
    for variant in report.variants:
        for run in variant.runs:
            assert run.status == verdict.TRAINS and 1 <= run.steps_to_target <= 20
            assert run.seconds_to_target == pytest.approx(sum(run.laps[:run.steps_to_target]))
    assert report.original.seconds_mean > 0
    assert "in wall-clock seconds" in report.target


def test_no_time_to_target_when_one_does_not_train(sigmoid):
    assert all(r.steps_to_target is None and r.seconds_to_target is None
               for v in sigmoid[2].variants for r in v.runs)


@pytest.fixture(scope="module")
def bn_cnn():
    """A small VGG with BatchNorm: in training mode, its predictions follow the batch."""
    return fixture_module("vgg").vgg11_small()


def test_mode_check_inference_in_training_mode_depends_on_the_batch(bn_cnn):
    check = bench.mode_check(bn_cnn)
    assert check.train_mode_changed > 0.1
    assert check.eval_mode_changed == 0.0
    assert check.samples == measure.MODE_SAMPLES
    assert "in training mode (batch statistics, as without .eval())" in check.rule
    assert check.to_dict() == {"train_mode_changed": check.train_mode_changed,
                               "eval_mode_changed": 0.0, "samples": 128, "rule": check.rule}


def test_mode_check_leaves_the_model_alone_and_skips_models_without_batchnorm(bn_cnn):
    state = copy.deepcopy(bn_cnn.state_dict())
    bench.mode_check(bn_cnn.eval())
    assert not bn_cnn.training
    assert all(torch.equal(state[k], v) for k, v in bn_cnn.state_dict().items())
    assert bench.mode_check(fixture_module("deep_plain").DeepMLP()) is None


def test_the_benchmark_measures_the_mode_check_on_the_original(bn_cnn, sigmoid):
    fixed = bnlint.fix(bn_cnn, select=["BN001"]).model
    report = bench.benchmark(bn_cnn, fixed)
    assert report.verdict == IDENTICAL and report.mode_check.train_mode_changed > 0.1
    assert report.to_dict()["mode_check"]["eval_mode_changed"] == 0.0
    assert sigmoid[2].mode_check is None  # no BatchNorm in the original


def test_quick_trains_fewer_seeds_and_steps_and_says_what_it_gives_up(tiny):
    report = bench.benchmark(*tiny, quick=True, lr=0.05, compare=False)
    assert report.settings["seeds"] == results.QUICK_SEEDS
    assert report.settings["steps"] == results.MAX_STEPS // 2 and report.settings["quick"]
    [note] = [n for n in report.notes if n.startswith("--quick")]
    assert "2 seeds instead of 3 and 100 steps instead of 200" in note and "can go unseen" in note


def test_seeded_runs_give_the_same_numbers_again(sigmoid):
    again = bench.benchmark(*sigmoid[:2], **SIGMOID)
    assert measured(again) == measured(sigmoid[2])


# --- how long: the models' compute by default, the clock only when asked -----------------------

@pytest.fixture(scope="module")
def tiny():
    """A plain six-stage MLP and its BN005 fix, small enough that a default run (200 steps)
    takes a second. The first benchmark of a process pays a one-off import for counting
    FLOPs; it is paid here, so that it is not what the budget tests time."""
    layers = [nn.Linear(8, 16), nn.ReLU()]
    for _ in range(5):
        layers += [nn.Linear(16, 16), nn.ReLU()]
    model = nn.Sequential(*layers, nn.Linear(16, 4))
    pair = model, bnlint.fix(model, select=["BN005"], unsafe=True).model
    bench.benchmark(*pair, steps=1, seeds=1)
    return pair


# a learning rate given and no output comparison: the time a budget holds is the training's
GIVEN = dict(lr=0.01, compare=False)


@contextmanager
def busy_cores(per_core: int = 1):
    """Every core kept busy by ``per_core`` busy-looping processes: a loaded shared machine."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
             for _ in range(min(per_core * cores, 16))]
    try:
        time.sleep(0.3)  # until they run
        yield
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()


def measured(report) -> dict:
    """The report as JSON without the times, the one thing that may change run to run."""
    data = report.to_dict()
    for variant in data["variants"].values():
        variant.pop("step_ms")
        variant.pop("seconds_to_target")
        for run in variant["runs"]:
            run.pop("step_ms")
            run.pop("seconds_to_target")
    return data


def test_default_runs_are_the_same_on_a_loaded_machine(tiny):
    quiet = bench.benchmark(*tiny, seeds=1)
    with busy_cores():
        loaded = bench.benchmark(*tiny, seeds=1)
    assert measured(quiet) == measured(loaded)  # steps, every loss, the verdict
    flops = sum(quiet.settings["flops_per_step"].values())
    assert quiet.settings["steps_from"] == "compute" and flops > 0
    assert quiet.settings["steps"] == training.default_steps(flops) == results.MAX_STEPS
    assert not quiet.cut_by_time and quiet.settings["time_budget"] is None


def test_default_steps_never_read_the_clock(tiny, monkeypatch):
    """A machine a million times slower, as the clock sees it, trains the same steps."""
    quiet = bench.benchmark(*tiny, seeds=1)
    ticks = iter(range(10**9))
    monkeypatch.setattr(time, "perf_counter", lambda: float(next(ticks)))
    slow = bench.benchmark(*tiny, seeds=1)
    assert measured(slow) == measured(quiet)


def test_default_steps_follow_the_compute_of_a_step():
    assert training.default_steps(0) == results.MAX_STEPS
    assert training.default_steps(results.COMPUTE_PER_SEED / 55) == 50  # in tens, rounded down
    assert training.default_steps(results.COMPUTE_PER_SEED) == results.MIN_STEPS


class VirtualClock:
    """``time.perf_counter`` as a budget sees it, the same on any machine: each reading moves it
    on by ``tick`` seconds, so the test asserts the budget's arithmetic, not the machine's load."""

    def __init__(self, tick: float):
        self.now, self.tick = 0.0, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


def test_a_time_budget_cuts_every_run_alike_and_says_so(tiny, monkeypatch):
    clock = VirtualClock(tick=1e-3)
    monkeypatch.setattr(time, "perf_counter", clock)
    report = bench.benchmark(*tiny, steps=100_000, seeds=2, time_budget=1.0, **GIVEN)
    assert clock.now <= 1.0
    steps = report.settings["steps"]
    assert 0 < steps < report.settings["steps_planned"] == 100_000
    assert all(len(r.losses) == steps for v in report.variants for r in v.runs)
    assert report.cut_by_time and report.to_dict()["cut_by_time"] is True
    assert report.rule.startswith(f"final loss = mean training loss over the last {steps // 10} ")
    out = io.StringIO()
    render.render_text([results.BenchEntry("tiny", report=report)], out)
    assert f"{report.verdict}: " in out.getvalue()
    assert f"cut by --time-budget 1s to {steps} of 100000 steps" in out.getvalue()


def test_a_budget_holds_when_the_machine_slows_down_part_way(tiny, monkeypatch):
    """The machine slows down threefold once the plan is made from the first steps: the runs
    that follow are cut alike to fit, and the budget still holds."""
    clock = VirtualClock(tick=1e-3)

    class SlowdownAfterPlanning:
        def plan(self, plan):
            self.steps = plan.steps
            clock.tick *= 3

        def step(self, label, done, total):
            pass

    watcher = SlowdownAfterPlanning()
    monkeypatch.setattr(time, "perf_counter", clock)
    report = bench.benchmark(*tiny, steps=100_000, seeds=2, time_budget=2.0, **GIVEN,
                             progress=watcher)
    assert clock.now <= 2.0
    steps = report.settings["steps"]
    assert report.cut_by_time and steps < watcher.steps
    assert all(len(r.losses) == steps for v in report.variants for r in v.runs)


def test_a_budget_that_cannot_hold_says_so_before_training(tiny):
    class Watcher:
        steps = 0

        def plan(self, plan):
            raise AssertionError("planned a run that cannot fit")

        def step(self, label, done, total):
            self.steps += 1

    watcher = Watcher()
    with pytest.raises(BenchError, match=r"--time-budget 0.001s cannot hold: .* give a larger "
                                         r"--time-budget or fewer --seeds"):
        bench.benchmark(*tiny, seeds=2, time_budget=0.001, progress=watcher)
    assert watcher.steps == 0


# --- the user's models are left alone ----------------------------------------------------------

def test_benchmark_and_probing_leave_the_users_models_untouched():
    vgg = fixture_module("vgg")
    model = vgg.vgg11_small().eval()
    fixed = bnlint.fix(model, select=["BN001"]).model.train()
    before = [copy.deepcopy(m.state_dict()) for m in (model, fixed)]
    bench.benchmark(model, fixed, steps=3, seeds=1)
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
    found, origin, out = tasks.find_input_shape(model, None, torch.device("cpu"))
    assert (found, origin) == (shape, "found by probing")


def test_a_declared_or_given_shape_wins():
    model = fixture_module("deep_plain").PlainCNN()
    assert tasks.find_input_shape(model, None, "cpu")[:2] == ((3, 32, 32), "from INPUT_SHAPE")
    assert tasks.find_input_shape(model, (3, 16, 16), "cpu")[:2] == (
        (3, 16, 16), "from --input-shape")
    with pytest.raises(BenchError, match=r"does not accept inputs of shape \(N, 5, 16, 16\)"):
        tasks.find_input_shape(model, (5, 16, 16), "cpu")


def test_no_shape_found_says_what_to_do():
    model = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(8, 2))
    with pytest.raises(BenchError, match="--input-shape"):
        tasks.find_input_shape(model, None, "cpu")


@pytest.mark.parametrize("head, kind, classes", [
    (nn.Linear(8, 5), results.CLASSIFICATION, 5),
    (nn.Linear(8, 100), results.CLASSIFICATION, tasks.MAX_CLASSES),
    (nn.Linear(8, 1), results.REGRESSION, None),
])
def test_task_follows_the_output_shape(head, kind, classes):
    task = tasks.synthetic_task(nn.Sequential(nn.Linear(4, 8), head), (4,), "cpu")
    assert (task.kind, task.classes) == (kind, classes)


# --- the synthetic data ------------------------------------------------------------------------

def fit(model, task, steps=300):
    data = tasks.SyntheticData(task, 64, seed=0).batches()
    loss_fn = tasks.loss_function(task)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        x, y = next(data)
        loss = loss_fn(model(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return next(tasks.SyntheticData(task, 512, seed=0).batches())


def test_synthetic_classification_is_learnable_and_balanced():
    torch.manual_seed(0)
    task = results.Task(results.CLASSIFICATION, (3, 8, 8), (4,), "", results.SYNTHETIC, classes=4)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(256, 4))
    x, y = fit(model, task)
    assert torch.bincount(y, minlength=4).min() > 512 / 4 / 3  # every class turns up
    accuracy = (model.eval()(x).argmax(1) == y).float().mean()
    assert accuracy > 0.6  # chance is 0.25


def test_synthetic_regression_is_learnable():
    torch.manual_seed(0)
    task = results.Task(results.REGRESSION, (32,), (3,), "", results.SYNTHETIC)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 3))
    x, y = fit(model, task)
    assert y.shape == (512, 3) and y.var().item() == pytest.approx(1.0, rel=0.3)
    with torch.no_grad():
        assert nn.functional.mse_loss(model(x), y) < 0.3 * y.var()


def test_synthetic_batches_are_fixed_by_the_seed():
    task = results.Task(results.CLASSIFICATION, (3, 8, 8), (10,), "", results.SYNTHETIC, classes=10)

    def first(seed):
        return next(tasks.SyntheticData(task, 8, seed).batches())

    assert all(torch.equal(a, b) for a, b in zip(first(1), first(1)))
    assert not torch.equal(first(1)[0], first(2)[0])


# --- the user's data ---------------------------------------------------------------------------

def test_user_tensors_train_both_models_on_the_same_batches(deep_mlp):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(256, 64, generator=generator)
    y = (x[:, :10].argmax(1))
    report = bench.benchmark(deep_mlp[0], copy.deepcopy(deep_mlp[0]), data=lambda: (x, y),
                             steps=20, seeds=1, compare=False)
    assert report.task.kind == results.CLASSIFICATION and report.task.data == "the given data"
    assert report.original.runs[0].losses == report.fixed.runs[0].losses


def test_user_data_that_is_not_batches_is_a_clear_error(deep_mlp):
    with pytest.raises(BenchError, match="DataLoader"):
        bench.benchmark(*deep_mlp, data=lambda: 42, steps=2, seeds=1)


# --- output ------------------------------------------------------------------------------------

def test_sparkline_shares_the_scale_of_the_curves_compared():
    assert render.sparkline([1, 2, 3, 4], lo=1, hi=4) == "▁▃▆█"
    assert render.sparkline([1, 1], lo=1, hi=8) == "▁▁"
    assert len(render.sparkline(list(range(100)), lo=0, hi=99)) == render.SPARK_WIDTH


@pytest.fixture(scope="module")
def entry(deep_mlp):
    return bench.bench_model("deep_plain.py:DeepMLP()", deep_mlp[0], select=["BN005"],
                             steps=20, seeds=2)


def test_plot_file(entry, tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "curves.png"
    render.write_plot([entry], path)
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000


def test_the_first_plot_says_it_builds_the_font_cache(tmp_path, monkeypatch):
    """A fresh matplotlib cache folder: the plot sits silent while fonts are indexed, so the
    command says why first; with the cache built, it says nothing of it."""
    pytest.importorskip("matplotlib")
    monkeypatch.setattr("matplotlib.get_cachedir", lambda: str(tmp_path))
    assert render.font_cache_missing()
    (tmp_path / "fontlist-v390.json").write_text("{}")
    assert not render.font_cache_missing()


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_cli_bench_text_shows_the_table_the_verdict_and_its_rule(tmp_path):
    pytest.importorskip("matplotlib")
    plot = tmp_path / "curves.png"
    result = run("fixtures/deep_plain.py:DeepMLP()", "--select", "BN005", "--bench",
                 "--steps", "20", "--seeds", "2", "--lr", "0.01", "--plot", str(plot))
    assert result.exit_code == 1, result.output  # findings, as without --bench
    assert plot.read_bytes().startswith(b"\x89PNG") and f"written to {plot}" in result.stderr
    assert "learning-rate sweep and mode check" in result.stderr
    text = result.output
    assert "Benchmark of fixtures/deep_plain.py:DeepMLP()" in text
    assert "BN005 ×8" in text and "input (64,) from INPUT_SHAPE" in text
    rows = [line.split() for line in text.splitlines() if line.split()[:1] in (["original"],
                                                                               ["fixed"])]
    assert len(rows) == 2 and all(set(row[-1]) <= set(render.SPARKS) for row in rows)
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
    assert report["settings"]["steps_from"] == "given" and report["cut_by_time"] is False
    runs = report["variants"]["fixed"]["runs"]
    assert [r["seed"] for r in runs] == [0, 1] and all(len(r["losses"]) == 20 for r in runs)
    assert data["summary"]["by_code"] == {"BN005": 1}  # one line builds all eight layers


def test_cli_bench_default_steps_say_where_they_come_from():
    result = run("fixtures/deep_plain.py:DeepMLP()", "--select", "BN005", "--bench",
                 "--seeds", "1")
    assert "training 200 steps × 1 seed," in result.stdout
    assert ("steps: 200 from the models' compute, the same on any machine: 0.0472 GFLOP a "
            "training step of both, 200 GFLOP a seed, 20 to 200 steps") in result.stdout


def test_cli_bench_estimates_the_time_of_a_long_run(monkeypatch):
    monkeypatch.setattr(cli, "ESTIMATE_FROM", 0.0)  # every run counts as long
    result = run("fixtures/deep_plain.py:DeepMLP()", "--select", "BN005", "--bench",
                 "--steps", "10", "--seeds", "1", "--format", "json")
    assert ("Benchmarking fixtures/deep_plain.py:DeepMLP(): 10 steps × 1 seed of both models, "
            "with a learning-rate range test first, about ") in result.stderr
    assert "(estimated from the first steps)" in result.stderr
    json.loads(result.stdout)  # stdout stays the report


def test_cli_bench_budget_that_cannot_hold_is_an_error_before_training():
    result = run("fixtures/deep_plain.py:DeepMLP()", "--select", "BN005", "--bench",
                 "--time-budget", "0.001")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert ("bnlint: error: fixtures/deep_plain.py:DeepMLP(): benchmark not run: "
            "--time-budget 0.001s cannot hold") in result.stderr


def test_cli_bench_model_without_fixes_gets_the_mode_check_alone():
    result = run("fixtures/clean.py:ResNetTiny()", "--bench")
    assert result.exit_code == 0
    assert "no fix applies to this model, so there is nothing to train" in result.output
    assert "with .eval(): 0%" in result.output and "mode check: the original trained" in result.output


def test_cli_bench_model_without_fixes_or_batchnorm_is_not_run():
    result = run("fixtures/deep_plain.py:DeepMLP()", "--bench")  # BN005 is off by default
    assert result.exit_code == 0 and "Benchmark of" not in result.output
    assert "Nothing to benchmark: no model has a finding with a fix or holds BatchNorm." in (
        result.output)


def test_cli_bench_safe_fixes_alone_are_verified_not_trained():
    result = run("fixtures/vgg.py:vgg11_small()", "--select", "BN001", "--bench")
    assert result.exit_code == 1, result.output
    text = result.output
    assert "identical function, verified on 352 inputs: largest output difference" in text
    assert "not trained" in text and "\n  training " not in text
    assert "mode     without .eval():" in text and "with .eval(): 0%" in text


def test_cli_bench_exact_trains_safe_fixes_too():
    result = run("fixtures/vgg.py:vgg11_small()", "--select", "BN001", "--bench",
                 "--bench-exact", "--steps", "10", "--seeds", "1", "--lr", "0.02",
                 "--format", "json")
    [entry] = json.loads(result.stdout)["benchmarks"]
    report = entry["benchmark"]
    assert report["equivalence"]["identical"] and report["verdict"] != IDENTICAL
    assert len(report["variants"]["fixed"]["runs"]) == 1
    assert entry["mode_check"] == report["mode_check"]
    assert entry["mode_check"]["eval_mode_changed"] == 0.0


MIXED = """
import torch.nn as nn


class Net(nn.Module):
    INPUT_SHAPE = (3, 16, 16)

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)  # bias into BatchNorm: BN001, safe
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)  # after the ReLU: BN002, unsafe
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        x = self.bn1(self.conv1(x)).relu()
        x = self.bn2(self.conv2(x).relu())
        return self.head(x.mean((2, 3)))
"""


def test_cli_bench_a_safe_and_an_unsafe_fix_are_trained(tmp_path):
    """BN001 (safe) and BN002 (unsafe) on one model: the registry's safety decides, and one
    unsafe fix means training, without comparing outputs first."""
    (tmp_path / "mixed.py").write_text(MIXED)
    result = run(f"{tmp_path / 'mixed.py'}:Net()", "--bench", "--steps", "5", "--seeds", "1",
                 "--lr", "0.01", "--format", "json")
    [entry] = json.loads(result.stdout)["benchmarks"]
    assert {f["code"] for f in entry["fixes"]} == {"BN001", "BN002"}, result.output
    report = entry["benchmark"]
    assert report["equivalence"] is None and report["variants"]["fixed"]["runs"]


def test_fix_safety_comes_from_the_registry():
    from bnlint.rules import RULES, Safety

    assert {code for code in RULES if bench.safe_fix(code)} == {
        code for code, rule in RULES.items() if rule.fix is Safety.SAFE} == {"BN001"}


def test_cli_bench_init_scale_and_quick_in_json():
    result = run("fixtures/deep_plain.py:DeepMLP()", "--select", "BN005", "--bench", "--quick",
                 "--init-scale", "0.1,10", "--lr", "0.01", "--format", "json")
    report = json.loads(result.stdout)["benchmarks"][0]["benchmark"]
    assert report["settings"]["quick"] and report["settings"]["seeds"] == 2
    assert report["settings"]["init_scales"] == [0.1, 10]
    assert [p["scale"] for p in report["variants"]["fixed"]["init_scale"]] == [0.1, 10]
    assert "init_scale" in report["rules"]


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
    (["--bench", "--time-budget", "0"], "--time-budget"),
    (["--quick"], "--quick goes with --bench"),
    (["--bench-exact"], "--bench-exact goes with --bench"),
    (["--bench", "--init-scale", "0,10"], "give positive factors"),
    (["--bench", "--init-scale", "a"], "give positive factors"),
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
