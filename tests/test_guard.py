"""bnlint.guard: catching inference in training mode and batches of one at run time."""

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
