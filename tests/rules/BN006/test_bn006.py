"""BN006: BatchNorm1d on (batch, length, features) values, which normalises the positions."""

import ast
import re

import pytest
import torch
import torch.nn as nn

import bnlint
from bnlint.edits import split_lines
from bnlint.lint import lint_specs
from bnlint.rules import RULES, wrong_axis
from conftest import FIXTURES, import_fresh, line_of, run_bnlint, shaped_graph

pytestmark = pytest.mark.usefixtures("one_thread")

WRONG = {  # model in fixtures/wrong_axis.py -> the layer whose features-last output it gets
    "TokenMixer": "proj",
    "TextEncoder": "embed",
    "GRUTagger": "rnn",
    "AttentionBlock": "attn",
    "EncoderHead": "encoder",
}
CLEAN = ["TokenMixerLayerNorm", "ConvSequence", "GRUTaggerTransposed", "PermutedProjection",
         "CategoryEncoder"]


def bn006(report):
    return [f for f in report.findings if f.code == "BN006"]


def test_finds_every_producer_kind_in_the_fixture_and_nothing_in_the_clean_twins():
    report = lint_specs([str(FIXTURES / "wrong_axis.py")])
    assert {m.spec.split(":")[-1].rstrip("()") for m in report.models} == set(WRONG) | set(CLEAN)
    assert [f.code for f in report.findings] == ["BN006"] * len(WRONG)
    found = {f.model.split(":")[-1].rstrip("()"): f for f in report.findings}
    assert set(found) == set(WRONG)
    text = (FIXTURES / "wrong_axis.py").read_text().splitlines()
    for model, layer in WRONG.items():
        finding = found[model]
        assert (finding.module, finding.related, finding.fix) == ("norm", (layer,), "unsafe")
        assert "self.norm = nn.BatchNorm1d(LENGTH)" in text[finding.line - 1]
        assert "its 12 channels are positions" in finding.message
        assert "Use nn.LayerNorm(16)" in finding.message


class After(nn.Module):
    """``layer`` (its output picked by ``pick``), then ``between``, then BatchNorm1d."""

    def __init__(self, layer, channels, pick=None, between=None):
        super().__init__()
        self.layer = layer
        self.pick = pick
        self.between = between
        self.norm = nn.BatchNorm1d(channels)

    def forward(self, x):
        y = self.layer(x)
        if self.pick is not None:
            y = y[self.pick]
        if self.between is not None:
            y = self.between(y)
        return self.norm(y)


@pytest.mark.parametrize("layer, pick", [
    (nn.RNN(8, 16, batch_first=True), 0),
    (nn.LSTM(8, 8, batch_first=True, bidirectional=True), 0),
    (nn.LSTM(8, 32, batch_first=True, proj_size=16), 0),
    (nn.GRU(8, 16, batch_first=True), 0),
    (nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, batch_first=True), 2,
                           enable_nested_tensor=False), None),
    (nn.Linear(8, 16), None),
], ids=["RNN", "LSTM-bidirectional", "LSTM-proj", "GRU", "TransformerEncoder", "Linear"])
@pytest.mark.filterwarnings("ignore:LSTM with projections")
def test_every_recurrent_and_transformer_layer(layer, pick):
    model = After(layer, 12, pick)
    x = torch.randn(2, 12, 8)
    model.eval()(x)  # the model runs: BatchNorm1d(12) fits the 12 positions
    [finding] = bn006(bnlint.check(model))
    assert finding.module == "norm" and finding.related == ("layer",)


class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.decoder = nn.TransformerDecoderLayer(8, 2, 16, batch_first=True)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.norm = nn.BatchNorm1d(5)
        self.norm2 = nn.BatchNorm1d(5)

    def forward(self, tgt, memory):
        y = self.norm(self.decoder(tgt, memory))
        return self.norm2(torch.relu(self.attn(y, memory, memory)[0]) + y)


def test_decoder_layer_and_attention_through_activation_and_residual():
    report = bnlint.check(Decoder())
    assert [(f.module, f.related) for f in bn006(report)] == [
        ("norm", ("decoder",)), ("norm2", ("attn",))]


@pytest.mark.parametrize("model", [
    After(nn.Conv1d(8, 16, 3), 16),
    After(nn.Linear(8, 16), 16, between=lambda y: y.transpose(1, 2)),
    After(nn.Linear(8, 16), 16, between=lambda y: y.permute(0, 2, 1)),
    After(nn.GRU(8, 16, batch_first=True), 16, 0, between=lambda y: y.transpose(1, 2)),
    After(nn.GRU(8, 16), 4, 0),  # (length, batch, features): not batch-first, not this rule
    After(nn.Linear(8, 16), 16, between=lambda y: y.flatten(1)),
    After(nn.Sequential(nn.Flatten(), nn.Linear(96, 16)), 16),
], ids=["Conv1d", "transpose", "permute", "GRU-transposed", "GRU-time-first", "flatten",
        "2-D-Linear"])
def test_silent_where_dim_1_holds_the_features(model):
    assert bn006(bnlint.check(model)) == []


def test_shapes_decide_where_the_sizes_do_not():
    """BatchNorm1d(16) after Linear(8, 16): right on (batch, 16), wrong on (batch, 16, 16).
    Without shapes bnlint cannot tell, and stays silent; an example input settles it."""
    model = After(nn.Linear(8, 16), 16)
    assert bn006(bnlint.check(model)) == []
    assert list(wrong_axis.check(shaped_graph(model, torch.randn(4, 8)))) == []
    [hit] = wrong_axis.check(shaped_graph(model, torch.randn(4, 16, 8)))
    assert hit.module == "norm" and "its 16 channels are positions" in hit.message
    embedding = After(nn.Embedding(10, 16), 16)
    assert list(wrong_axis.check(shaped_graph(embedding, torch.randint(0, 10, (4,))))) == []
    assert len(list(wrong_axis.check(shaped_graph(embedding, torch.randint(0, 10, (4, 16)))))) == 1


# --- the fix -----------------------------------------------------------------------------------

def test_fix_replaces_the_batchnorm_with_layernorm_over_the_features():
    module = import_fresh(FIXTURES / "wrong_axis.py")
    model = module.TokenMixer()
    untouched = {k: v.clone() for k, v in model.state_dict().items()}
    assert bnlint.fix(model).applied == []  # unsafe: only when asked
    result = bnlint.fix(model, unsafe=True)
    assert [(e.code, e.module) for e in result.applied] == [("BN006", "norm")]
    assert all(torch.equal(untouched[k], v) for k, v in model.state_dict().items())
    fixed = result.model
    assert isinstance(fixed.get_submodule("norm"), nn.LayerNorm)
    assert bnlint.check(fixed).findings == []
    # the fixed model is the "done right" model: its weights load into it and compute the same
    twin = module.TokenMixerLayerNorm()
    twin.load_state_dict(fixed.state_dict())
    x = torch.randn(4, 12, 8)
    for mode in (True, False):
        torch.testing.assert_close(fixed.train(mode)(x), twin.train(mode)(x))


class SharedNorm(nn.Module):
    """One BatchNorm1d(16) normalises conv channels (right) and a Linear's output over 16
    positions (wrong)."""

    def __init__(self, features=16):
        super().__init__()
        self.conv = nn.Conv1d(8, 16, 3, padding=1, bias=False)
        self.proj = nn.Linear(8, features)
        self.norm = nn.BatchNorm1d(16)

    def forward(self, x):  # x: (batch, 8, 16)
        return self.norm(self.conv(x)).mean(2), self.norm(self.proj(x.transpose(1, 2))).mean(1)


def test_fix_wraps_the_wrong_call_in_transposes_when_the_batchnorm_is_also_used_right():
    model = SharedNorm()
    x = torch.randn(4, 8, 16)
    gm = shaped_graph(model, x)
    [hit] = wrong_axis.check(gm)
    assert hit.fix == "unsafe"
    assert wrong_axis.fix(gm, hit) is None
    gm.graph.lint()
    gm.recompile()
    assert isinstance(gm.get_submodule("norm"), nn.BatchNorm1d)
    model.eval()
    expected_conv = model.norm(model.conv(x)).mean(2)
    features_first = model.proj(x.transpose(1, 2)).transpose(1, 2)
    expected_proj = model.norm(features_first).transpose(1, 2).mean(1)
    conv_out, proj_out = gm.eval()(x)
    torch.testing.assert_close(conv_out, expected_conv)
    torch.testing.assert_close(proj_out, expected_proj)
    assert list(wrong_axis.check(gm)) == []


def test_no_fix_where_the_shared_batchnorm_has_other_channels_than_the_features():
    model = SharedNorm(features=24)
    [hit] = wrong_axis.check(shaped_graph(model, torch.randn(4, 8, 16)))
    assert hit.fix is None
    assert "also called on values with their features in dim 1" in hit.message
    assert "16 channels where these values have 24 features" in hit.message


# --- the source fix ----------------------------------------------------------------------------

def test_fix_rewrites_each_constructor_to_layernorm_and_the_result_is_clean(project):
    path = project / "models.py"
    before = (FIXTURES / "wrong_axis.py").read_text()
    path.write_text(before)
    assert run_bnlint(path.name, "--fix").exit_code == 1
    assert path.read_text() == before  # unsafe: only with --unsafe-fixes
    result = run_bnlint(path.name, "--fix", "--unsafe-fixes")
    assert result.exit_code == 1, result.output
    after = path.read_text()
    assert after == before.replace("self.norm = nn.BatchNorm1d(LENGTH)",
                                   "self.norm = nn.LayerNorm(16)")
    copy = project / "models_again.py"  # a new name: this process imported models.py already
    copy.write_text(after)
    again = run_bnlint(copy.name)
    assert again.exit_code == 0, again.output
    edited = import_fresh(copy)
    assert edited.GRUTagger()(torch.randn(2, 12, 8)).shape == (2, 12, 5)


@pytest.mark.parametrize("call, expected", [
    ("nn.BatchNorm1d(12)", "nn.LayerNorm(16)"),
    ("torch.nn.BatchNorm1d(num_features=12, eps=1e-3, momentum=0.2, affine=False)",
     "torch.nn.LayerNorm(16, eps=1e-3, elementwise_affine=False)"),
    ("nn.BatchNorm1d(12, 1e-3, 0.1, False, True, dtype=torch.float64)",
     "nn.LayerNorm(16, eps=1e-3, elementwise_affine=False, dtype=torch.float64)"),
    ("nn.BatchNorm1d(\n    12,  # the length\n    eps=1e-5,\n)", "nn.LayerNorm(16, eps=1e-5)"),
])
def test_source_edit_keeps_what_layernorm_takes(call, expected):
    text = f"norm = {call}\n"
    lines = split_lines(text)
    edit = wrong_axis.source_edit("m.py", lines, ast.parse(text).body[0].value, 16)
    assert (edit.start, edit.end, edit.text) == ((1, 7), (len(lines), len(lines[-1]) - 1),
                                                 expected)


@pytest.mark.parametrize("call, reason", [
    ("BatchNorm1d(12)", "not written `<module>.BatchNorm1d(...)`"),
    ("nn.BatchNorm1d(*sizes)", "*args or **kwargs"),
])
def test_source_edit_refuses_what_it_cannot_write(call, reason):
    text = f"norm = {call}\n"
    assert reason in wrong_axis.source_edit("m.py", split_lines(text),
                                            ast.parse(text).body[0].value, 16)


# --- suppression and the explanation page --------------------------------------------------------

@pytest.mark.parametrize("comment, suppressed", [
    ("# bnlint: ignore[BN006]", True),
    ("# noqa: BN006", True),
    ("# noqa: BN001", False),
])
def test_suppression_on_the_batchnorm_line(lint_code, comment, suppressed):
    report = lint_code(f"""
        import torch.nn as nn

        class Tagger(nn.Module):
            def __init__(self):
                super().__init__()
                self.rnn = nn.LSTM(8, 16, batch_first=True)
                self.norm = nn.BatchNorm1d(12)  {comment}

            def forward(self, x):
                return self.norm(self.rnn(x)[0])
    """)
    assert (bn006(report) == []) is suppressed


def page_block(title: str) -> str:
    page = RULES["BN006"].explanation
    return re.search(rf"## {title}\n```python\n(.*?)```", page, re.S).group(1)


def test_page_example_raises_bn006_alone_and_use_instead_raises_nothing(tmp_path):
    example, instead = tmp_path / "example.py", tmp_path / "instead.py"
    example.write_text(page_block("Example"))
    instead.write_text(page_block("Use instead"))
    assert [f.code for f in lint_specs([str(example)], select=["ALL"]).findings] == ["BN006"]
    assert lint_specs([str(instead)], select=["ALL"]).findings == []
    assert line_of(example, "BatchNorm1d(length)") == lint_specs([str(example)]).findings[0].line
