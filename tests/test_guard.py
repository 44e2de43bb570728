"""bnlint.guard: catching inference in training mode, batches of one and frozen BatchNorm in
training mode at run time; bnlint.freeze_batchnorm."""

import copy
import warnings

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, update_bn

import bnlint
from bnlint.mode_guard import BatchNormModeError, BatchNormModeWarning
from fixtures_models import fixture_module


@pytest.fixture
def model():
    torch.manual_seed(0)
    return fixture_module("clean").ResNetTiny()


def images(n=4):
    return torch.randn(n, 3, 16, 16)


def reports(run):
    """The guard's warnings while ``run()`` runs, every one of them recorded."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run()
    return [str(w.message) for w in caught if issubclass(w.category, BatchNormModeWarning)]


def test_warns_on_inference_in_training_mode(model):
    with bnlint.guard(model):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with torch.no_grad():
                model(images())
    [warning] = caught
    assert warning.category is BatchNormModeWarning
    assert warning.filename == __file__  # it points at the line that ran the model
    assert "`bn1` ran in training mode with autograd disabled (torch.no_grad())" in \
        str(warning.message)
    assert "model.eval()" in str(warning.message)


def test_names_inference_mode(model):
    with bnlint.guard(model):
        with torch.inference_mode():
            [message] = reports(lambda: model(images()))
    assert "(torch.inference_mode())" in message


def test_one_report_per_forward_not_one_per_layer(model):
    assert len([m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]) > 5
    with bnlint.guard(model), torch.no_grad():
        assert len(reports(lambda: [model(images()) for _ in range(3)])) == 3


def test_raise_stops_before_the_running_statistics_are_overwritten(model):
    before = model.bn1.running_mean.clone()
    with bnlint.guard(model, action="raise"), torch.no_grad():
        with pytest.raises(BatchNormModeError, match="`bn1` ran in training mode"):
            model(images())
    assert torch.equal(model.bn1.running_mean, before)


@pytest.mark.parametrize("action", ["warn", "raise"])
def test_silent_on_correct_use(model, action):
    with bnlint.guard(model, action=action):
        assert reports(lambda: model(images()).sum().backward()) == []  # training
        model.eval()
        with torch.no_grad():
            assert reports(lambda: model(images(1))) == []  # inference, even of one image


def test_batch_of_one_in_training_mode(model):
    with bnlint.guard(model):
        [message] = reports(lambda: model(images(1)))
    assert "`bn1` got a batch of one sample [1, 16, 16, 16] in training mode" in message
    assert "drop_last=True" in message


def test_one_value_per_channel_is_reported_before_torch_fails():
    head = nn.Sequential(nn.Linear(8, 4), nn.BatchNorm1d(4))
    with bnlint.guard(head, action="raise"):
        with pytest.raises(BatchNormModeError, match="one value per channel"):
            head(torch.randn(1, 8))


def test_recalibrating_allows_a_training_mode_pass_without_autograd(model):
    """Re-estimating the statistics after weight averaging is what update_bn does: a forward
    pass in training mode under no_grad."""
    swa = AveragedModel(model)
    loader = [images(8) for _ in range(3)]
    with bnlint.guard(swa, action="raise") as guard:
        with pytest.raises(BatchNormModeError):
            update_bn(loader, swa)
        before = swa.module.bn1.running_mean.clone()
        with guard.recalibrating():
            update_bn(loader, swa)
        assert not torch.equal(swa.module.bn1.running_mean, before)
        with guard.recalibrating(), torch.no_grad():
            with pytest.raises(BatchNormModeError, match="batch of one"):
                swa(images(1))


def test_remove_and_context_exit_unhook(model):
    handle = bnlint.guard(model)
    assert len(handle.layers) == 10 and handle.layers[:2] == ["bn1", "layer1.0.bn1"]
    handle.remove()
    with torch.no_grad():
        assert reports(lambda: model(images())) == []
    with pytest.raises(RuntimeError, match="boom"), bnlint.guard(model, action="raise"):
        raise RuntimeError("boom")
    with torch.no_grad():
        model(images())


def test_batchnorm_without_running_statistics_is_the_same_in_both_modes():
    layer = nn.BatchNorm1d(4, track_running_stats=False)
    with bnlint.guard(layer, action="raise"), torch.no_grad():
        layer(torch.randn(3, 4))


def test_guarding_a_single_layer_names_it():
    layer = nn.BatchNorm1d(4)
    with bnlint.guard(layer), torch.no_grad():
        [message] = reports(lambda: layer(torch.randn(3, 4)))
    assert "`BatchNorm1d` ran in training mode" in message


def test_bad_arguments():
    with pytest.raises(ValueError, match="action must be one of 'warn', 'raise', not 'log'"):
        bnlint.guard(nn.BatchNorm1d(4), action="log")
    with pytest.raises(TypeError, match="takes a torch.nn.Module, not dict"):
        bnlint.guard({})


def frozen_backbone():
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                             nn.Conv2d(8, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return backbone.requires_grad_(False), nn.Linear(8, 2)


def test_reports_frozen_batchnorm_in_a_training_forward_once_per_pass():
    backbone, head = frozen_backbone()
    model = nn.Sequential(backbone, head).train()
    with bnlint.guard(model):
        [message] = reports(lambda: model(images()).sum().backward())
    assert message.startswith("BatchNorm layer `0.1` ran in training mode with its affine "
                              "parameters frozen (requires_grad=False)")
    assert "bnlint.freeze_batchnorm(module)" in message
    with bnlint.guard(model, action="raise"), pytest.raises(BatchNormModeError, match="frozen"):
        model(images())


@pytest.mark.parametrize("case", ["trainable", "bias trainable", "eval", "no_grad",
                                  "recalibrating", "input needs a gradient", "no affine"])
def test_silent_where_frozen_batchnorm_is_no_mistake(case):
    backbone, head = frozen_backbone()
    backbone.train()
    x = images()
    if case == "trainable":
        backbone.requires_grad_(True)
    elif case == "bias trainable":
        backbone[1].bias.requires_grad_(True)
        backbone[4].bias.requires_grad_(True)
    elif case == "eval":
        backbone.eval()
    elif case == "input needs a gradient":  # a discriminator during the generator's update
        x.requires_grad_(True)
    elif case == "no affine":
        backbone[1] = nn.BatchNorm2d(8, affine=False)
        backbone[4] = nn.BatchNorm2d(8, affine=False)
    with bnlint.guard(backbone, action="raise") as guard:
        with torch.set_grad_enabled(case != "no_grad"):
            if case == "recalibrating":
                with guard.recalibrating():
                    backbone(x)
            elif case != "no_grad":
                head(backbone(x)).sum().backward()


def test_a_gan_step_freezing_the_discriminator_for_the_generator_is_silent():
    torch.manual_seed(0)
    generator = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
    discriminator = nn.Sequential(nn.Linear(2, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1))
    with bnlint.guard(generator, action="raise"), bnlint.guard(discriminator, action="raise"):
        discriminator.requires_grad_(False)
        discriminator(generator(torch.randn(6, 4))).mean().backward()
        discriminator.requires_grad_(True)
        discriminator(generator(torch.randn(6, 4)).detach()).mean().backward()


def test_freeze_batchnorm_keeps_batchnorm_in_eval_mode_through_train():
    backbone, head = frozen_backbone()
    backbone.requires_grad_(True)
    model = nn.Sequential(backbone, head)
    stats = [(m.running_mean.clone(), m.running_var.clone()) for m in backbone.modules()
             if isinstance(m, nn.BatchNorm2d)]
    reference = copy.deepcopy(backbone).eval()
    assert bnlint.freeze_batchnorm(model) is model
    model.train()
    assert model.training and head.training and backbone[0].training
    assert not backbone[1].training and not backbone[4].training
    assert all(not p.requires_grad for m in (backbone[1], backbone[4]) for p in m.parameters())
    assert backbone[0].weight.requires_grad and head.weight.requires_grad
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = images(8)
    with bnlint.guard(model, action="raise"):
        out = backbone(x)
        head(out).sum().backward()
    torch.testing.assert_close(out, reference(x))
    optimizer.step()
    after = [(m.running_mean, m.running_var) for m in backbone.modules()
             if isinstance(m, nn.BatchNorm2d)]
    for (mean, var), (new_mean, new_var) in zip(stats, after):
        assert torch.equal(mean, new_mean) and torch.equal(var, new_var)
    model.eval()
    model.train(True)
    assert not backbone[1].training


def test_freeze_batchnorm_survives_copies_and_pickling(tmp_path):
    backbone, _ = frozen_backbone()
    bnlint.freeze_batchnorm(backbone)
    path = tmp_path / "backbone.pt"
    torch.save(backbone, path)
    for again in (copy.deepcopy(backbone), torch.load(path, weights_only=False)):
        again.train()
        assert not again[1].training and again[0].training
        assert again[1].train is not backbone[1].train
    assert set(backbone.state_dict()) == set(frozen_backbone()[0].state_dict())
    with pytest.raises(TypeError, match="takes a torch.nn.Module, not list"):
        bnlint.freeze_batchnorm([backbone])
    with pytest.raises(ValueError, match="boolean"):
        backbone[1].train("yes")
