"""Jupyter notebooks: their code cells read in order as one script (never run), findings placed
as `notebook.ipynb:cell N:line` in every output format, fixes written back as cell edits."""

import json

import pytest

from bnlint.notebook import NotANotebook, file_line, script_of
from conftest import KERNEL, code_cell, markdown_cell, run_bnlint, write_notebook

PRINTED = {"name": "stdout", "output_type": "stream", "text": ["épocas: 3\n"]}
TRAIN = [
    markdown_cell("# Training\nA small model, trained then used."),
    code_cell("%matplotlib inline\nimport torch\nfrom torch import nn\n!nvidia-smi\n", count=1),
    code_cell("model = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8))\n"
         "optimizer = torch.optim.SGD(model.parameters(), lr=0.1)\nmodel?", count=2),
    code_cell("%%time\nfor x in torch.randn(3, 16, 8):\n    loss = model(x).pow(2).mean()\n"
         "    optimizer.zero_grad()\n    loss.backward()\n    optimizer.step()",
         outputs=[PRINTED], count=3, tags=["train"]),
    code_cell("%%bash\nls -l | head\n"),
    code_cell("with torch.no_grad():\n    print(model(torch.randn(4, 8)))", count=5),
]


def test_reads_the_code_cells_as_one_script_without_ipython_syntax():
    script = script_of(json.dumps({"cells": TRAIN, "metadata": KERNEL}))
    assert [c.number for c in script.cells] == [2, 3, 4, 5, 6]
    lines = script.text.splitlines()
    assert lines[:4] == ["pass", "import torch", "from torch import nn", "pass"]
    assert lines[6] == "pass"  # model?
    assert lines[7:9] == ["pass", "for x in torch.randn(3, 16, 8):"]  # %%time runs Python
    assert lines[13:15] == ["", ""]  # %%bash: not Python
    assert script.locate(17) == (script.cells[4], 2)


def test_finding_is_placed_in_its_cell_in_every_format(tmp_path):
    write_notebook(tmp_path / "train.ipynb", *TRAIN)
    text = run_bnlint("train.ipynb", cwd=tmp_path).stdout
    assert text.startswith("train.ipynb:cell 6:2:11: BN003 `model` runs inference inside "
                           "`torch.no_grad()` but may be in training mode (set by "
                           "`nn.Sequential()` at line 1 of cell 3; a new module starts in "
                           "training mode)")

    [finding] = json.loads(run_bnlint("train.ipynb", "--format", "json",
                                      cwd=tmp_path).stdout)["findings"]
    assert (finding["path"], finding["cell"], finding["line"], finding["col"]) == \
        ("train.ipynb", 6, 2, 11)

    lines = (tmp_path / "train.ipynb").read_text().splitlines()
    json_line = next(i for i, line in enumerate(lines, 1)
                     if line.strip() == '"    print(model(torch.randn(4, 8)))"')
    [result] = json.loads(run_bnlint("train.ipynb", "--format", "sarif",
                                     cwd=tmp_path).stdout)["runs"][0]["results"]
    [location] = result["locations"]
    assert location["physicalLocation"]["artifactLocation"]["uri"] == "train.ipynb"
    assert location["physicalLocation"]["region"] == {"startLine": json_line}
    assert location["properties"] == {"cell": 6, "cellLine": 2, "cellColumn": 11}

    github = run_bnlint("train.ipynb", "--format", "github", cwd=tmp_path).stdout
    assert github.startswith(f"::warning file=train.ipynb,line={json_line},title=BN003::"
                             "BN003 (cell 6, line 2) `model` runs inference")


def test_fix_edits_the_cell_and_leaves_the_rest_of_the_notebook_alone(tmp_path):
    path = tmp_path / "train.ipynb"
    before = write_notebook(path, *TRAIN)
    diff = run_bnlint("train.ipynb", "--diff", "--unsafe-fixes", cwd=tmp_path).stdout
    assert '+    "model.eval()\\n",\n     "with torch.no_grad():\\n",' in diff
    result = run_bnlint("train.ipynb", "--fix", "--unsafe-fixes", cwd=tmp_path)
    assert result.exit_code == 1 and "1 fixed" in result.output
    after = path.read_text(encoding="utf-8")
    old, new = json.loads(before), json.loads(after)
    assert new["cells"][5]["source"] == ["model.eval()\n", "with torch.no_grad():\n",
                                         "    print(model(torch.randn(4, 8)))"]
    new["cells"][5]["source"] = old["cells"][5]["source"]
    assert new == old  # outputs, metadata, other cells untouched
    assert after.replace('    "model.eval()\\n",\n', "", 1) == before  # byte for byte
    assert run_bnlint("train.ipynb", cwd=tmp_path).exit_code == 0


def test_fix_counts_as_fixed_only_what_it_fixed_in_the_notebook(tmp_path):
    """A finding --fix cannot edit stays, in its cell, and is not also counted as fixed, however
    far down its cell it is from the edit."""
    traced = code_cell("class Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
                  "        self.bn = nn.BatchNorm1d(4)\n    def forward(self, x):\n"
                  "        return self.bn(x)\n" + "\n" * 100
                  + "traced = torch.jit.trace(Net(), torch.randn(2, 4))\n")
    write_notebook(tmp_path / "train.ipynb", *TRAIN, traced)
    data = json.loads(run_bnlint("train.ipynb", "--fix", "--unsafe-fixes", "--format", "json",
                                 cwd=tmp_path).stdout)
    assert [(f["cell"], f["line"]) for f in data["fixed"]] == [(6, 2)]
    assert [(f["cell"], f["line"], f["fix"]) for f in data["findings"]] == [(7, 107, None)]


def test_training_after_an_evaluation_cell(tmp_path):
    """BN004 across cells: the helper in one cell, the epoch loop in another; the fix moves
    train() to the top of the epoch loop."""
    write_notebook(tmp_path / "fit.ipynb",
          code_cell("import torch\nfrom torch import nn\n\nmodel = nn.Sequential(nn.Linear(8, 8), "
               "nn.BatchNorm1d(8))\noptimizer = torch.optim.SGD(model.parameters(), lr=0.1)\n"),
          code_cell("def evaluate(model):\n    model.eval()\n    with torch.no_grad():\n"
               "        return model(torch.randn(16, 8)).mean().item()\n"),
          code_cell("model.train()\nfor epoch in range(3):\n    for x in torch.randn(4, 16, 8):\n"
               "        loss = model(x).pow(2).mean()\n        optimizer.zero_grad()\n"
               "        loss.backward()\n        optimizer.step()\n    print(evaluate(model))"))
    [finding] = json.loads(run_bnlint("fit.ipynb", "--format", "json",
                                      cwd=tmp_path).stdout)["findings"]
    assert (finding["code"], finding["cell"], finding["line"]) == ("BN004", 3, 4)
    assert ("set by `model.eval()` at line 2 of cell 2, in `evaluate()` called at line 8 of "
            "cell 3, on the previous pass of the loop at line 2 of cell 3") in finding["message"]
    run_bnlint("fit.ipynb", "--fix", "--unsafe-fixes", cwd=tmp_path)
    cells = json.loads((tmp_path / "fit.ipynb").read_text())["cells"]
    assert cells[2]["source"][:3] == ["for epoch in range(3):\n", "    model.train()\n",
                                      "    for x in torch.randn(4, 16, 8):\n"]
    assert run_bnlint("fit.ipynb", cwd=tmp_path).exit_code == 0


def test_a_comment_in_the_cell_suppresses_it(tmp_path):
    cells = [*TRAIN[:-1], code_cell("with torch.no_grad():\n"
                               "    print(model(torch.randn(4, 8)))  # noqa: BN003")]
    write_notebook(tmp_path / "train.ipynb", *cells)
    assert run_bnlint("train.ipynb", cwd=tmp_path).exit_code == 0


def test_a_folder_holds_scripts_and_notebooks_and_the_notebook_follows_project_imports(tmp_path):
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "helpers.py").write_text(
        "import torch\n\n\n@torch.no_grad()\ndef predict(model, x):\n    return model(x)\n")
    write_notebook(tmp_path / "explore.ipynb",
          code_cell("import torch\nfrom torch import nn\nfrom helpers import predict\n"),
          code_cell("net = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))\n"
               "predict(net, torch.randn(2, 4))"))
    (tmp_path / "job.py").write_text("import torch\nfrom torch import nn\n\n"
                                     "m = nn.BatchNorm1d(4)\nwith torch.no_grad():\n"
                                     "    m(torch.randn(2, 4))\n")
    result = run_bnlint(".", "--static", cwd=tmp_path)
    assert [line.split(": BN")[0] for line in result.output.splitlines() if ": BN" in line] == [
        "explore.ipynb:cell 2:2:1", "job.py:6:5"]
    assert "in `predict()` of helpers.py" in result.output


@pytest.mark.parametrize("text", [
    "not json",
    json.dumps({"worksheets": []}),  # nbformat 3
    json.dumps({"cells": [code_cell("x <- 1")], "metadata": {"kernelspec": {"language": "R"}}}),
])
def test_other_files_named_ipynb_are_left_alone(tmp_path, text):
    (tmp_path / "odd.ipynb").write_text(text)
    with pytest.raises(NotANotebook):
        script_of(text)
    result = run_bnlint("odd.ipynb", "--static", cwd=tmp_path)
    assert result.exit_code == 0 and "Traceback" not in result.output


def test_a_cell_with_a_string_source_maps_its_first_line(tmp_path):
    path = tmp_path / "one.ipynb"
    cell = {**code_cell(""), "source": "import torch\nm = torch.nn.BatchNorm1d(4)\n"}
    path.write_text(json.dumps({"cells": [cell], "metadata": KERNEL}, indent=1))
    assert file_line(path.read_text(), 1, 1) == path.read_text().splitlines().index(
        '   "source": "import torch\\nm = torch.nn.BatchNorm1d(4)\\n"') + 1
    assert file_line(path.read_text(), 1, 2) is None
