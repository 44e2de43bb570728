"""BN010: a gradient penalty on a critic that holds BatchNorm, found by reading the training
script (the case files in tests/rules/BN010/ hold the rule's own traps)."""

import textwrap

import pytest

from bnlint.lint import lint_specs

HEADER = """\
import torch
from torch import autograd, nn
from torch.autograd import grad as torch_grad

from data import loader

"""


def bn010(tmp_path, body: str):
    path = tmp_path / "wgan.py"
    path.write_text(HEADER + textwrap.dedent(body), encoding="utf-8")
    return [f for f in lint_specs([str(path)], select=["BN010"]).findings]


CRITIC = """\
class Critic(nn.Module):
    def __init__(self):
        super().__init__()
        self.main = nn.Sequential(nn.Linear(2, 16), nn.BatchNorm1d(16), nn.ReLU(),
                                  nn.Linear(16, 1))

    def forward(self, x):
        return self.main(x)


class Trainer:
    def __init__(self, critic):
        self.D = critic

    def penalty(self, real, fake):
        mixed = (real + fake) / 2
        mixed.requires_grad = True
        score = self.D(mixed)
        gradients = {call}
        return ((gradients.norm(2, dim=1) - 1) ** 2).mean()


trainer = Trainer(Critic())
for real, fake in loader:
    trainer.penalty(real, fake).backward()
"""


def test_points_at_the_grad_call_and_names_the_critic_class(tmp_path):
    [finding] = bn010(tmp_path, CRITIC.format(
        call="torch_grad(outputs=score, inputs=mixed, grad_outputs=torch.ones(score.size()),"
             "\n                               create_graph=True, retain_graph=True)[0]"))
    assert (finding.line, finding.col) == (25, 21)
    assert finding.message.startswith("Gradient penalty on the output of `Critic` "
                                      "(`self.D`), which holds BatchNorm:")
    assert "Use LayerNorm, InstanceNorm or no normalisation" in finding.message
    assert finding.related == ("Critic",) and finding.fix is None


@pytest.mark.parametrize("call", [
    "autograd.grad(score.sum(), mixed)[0]",  # no graph of the gradient: nothing trained on it
    "autograd.grad(score.sum(), mixed, create_graph=False)[0]",
    "autograd.grad(score.sum(), mixed, create_graph=flag)[0]",  # not known
    "autograd.grad((score * 2).sum(), mixed, create_graph=True)[0]",  # not followed
])
def test_silent_unless_a_critic_output_is_differentiated_with_its_graph(tmp_path, call):
    assert bn010(tmp_path, "flag = input()\n" + CRITIC.format(call=call)) == []


def test_silent_on_a_gradient_penalty_of_a_critic_without_known_batchnorm(tmp_path):
    assert bn010(tmp_path, """\
        from models import Critic

        critic = Critic()
        for real, fake in loader:
            mixed = ((real + fake) / 2).requires_grad_()
            score = critic(mixed)
            gradients = autograd.grad(score.sum(), mixed, create_graph=True)[0]
            ((gradients.norm(2, dim=1) - 1) ** 2).mean().backward()
        """) == []
