"""The README's recipes run as written on each prepared benchmark, at tiny scale.

Each recipe block of README.md ("Recipes: the published DeepLab-v2 ResNet-101
settings") is run in a temporary folder: its `dataset/prepare.py` line on a
synthetic copy of the archive (test_datasets_prepare.py), its training line
with the recipe's flags (classes, batch x --grad-update-every, learning rate,
momentum, weight decay, augmentation) plus the `tiny` network, 33x33 crops and
two updates, from a tiny stand-in for the init weights, and its evaluation
line as written: the report and the JSON name the dataset's classes.
COCO-Stuff 164k's recipe trains multi-scale like 10k's; here its flags go to
train.py (which takes the same ones) to keep the test short.
"""

import json
import os
import shlex

import pytest

from conftest import ROOT, save_model, tiny_model
from deeplab_resnet import cli
from deeplab_resnet.weights import checkpoint
from deeplab_resnet.data import datasets
from deeplab_resnet.cli import evaluate, train, train_msc
from deeplab_resnet.training import run_record
from test_datasets_prepare import (make_ade20k, make_cityscapes, make_cocostuff10k,
                                   make_cocostuff164k, prepare)

MAKERS = {"cocostuff10k": make_cocostuff10k, "cocostuff164k": make_cocostuff164k,
          "cityscapes": make_cityscapes, "ade20k": lambda root: make_ade20k(root.parent)}
COMMANDS = {"train.py": train, "train_msc.py": train_msc, "evaluate.py": evaluate}
TINY = ["--model", "tiny", "--input-size", "33,33", "--num-steps", "2",
        "--save-pred-every", "2", "--save-num-images", "0"]
# A class name each report must show, to tell the datasets apart.
SHOWN = {"cocostuff10k": "hair brush", "cocostuff164k": "playingfield",
         "cityscapes": "traffic light", "ade20k": "chest of drawers"}


def readme_recipes():
    """{NAME: [argv of each command]} from the README's recipe blocks."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("### Recipes: the published DeepLab-v2", 1)[1].split("\n## ", 1)[0]
    recipes = {}
    for block in section.split("```bash")[1:]:
        block = block.split("```", 1)[0].replace("\\\n", " ")
        commands = [shlex.split(line)[1:] for line in block.splitlines() if line.strip()]
        recipes[commands[0][1]] = commands
    return recipes


def run_command(command, argv):
    with pytest.raises(SystemExit) as exit_info:
        cli.run(command.main, argv)
    return exit_info.value.code


def test_every_benchmark_has_a_recipe():
    assert sorted(readme_recipes()) == sorted(MAKERS)


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_recipe_trains_and_evaluation_names_the_classes(name, tmp_path, monkeypatch, capsys):
    (script, *prepare_args), (trainer, *train_args), (evaluator, *eval_args) = \
        readme_recipes()[name]
    assert (script, evaluator) == ("dataset/prepare.py", "evaluate.py")
    monkeypatch.chdir(tmp_path)  # the README's relative paths land here
    MAKERS[name](tmp_path / prepare_args[prepare_args.index("--root") + 1])
    assert prepare.main([*prepare_args, "--list-dir", "dataset"]) == 0
    init = save_model(tiny_model(21), str(tmp_path / "init" / "tiny"))
    train_args = [init if arg in ("init.caffemodel", "imagenet/r101") else arg
                  for arg in train_args]
    if name == "cocostuff164k":
        trainer = "train.py"
    assert run_command(COMMANDS[trainer], [*train_args, *TINY]) == 0
    snapshots = train_args[train_args.index("--snapshot-dir") + 1]
    record, step = run_record.read(checkpoint.latest_in(snapshots))
    assert (record["script"], step) == (trainer, 2)
    capsys.readouterr()
    report = str(tmp_path / "scores.json")
    assert run_command(evaluate, [*eval_args, "--json-output", report]) == 0
    out = capsys.readouterr().out
    assert f"  {SHOWN[name]} " in out and out.strip().splitlines()[-1].startswith("Mean IoU: ")
    dataset = eval_args[eval_args.index("--dataset") + 1]
    with open(report) as f:
        scores = json.load(f)
    assert list(scores["per_class_iou"]) == datasets.classes(dataset)[0]
    assert scores["settings"]["dataset"] == dataset
    assert os.path.isfile(tmp_path / "dataset" / f"{name}_val.txt")
