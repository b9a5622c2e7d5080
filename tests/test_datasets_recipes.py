"""Each prepared benchmark trains and evaluates with its README recipe's flags, at tiny scale.

The synthetic archives of test_datasets_prepare.py go through dataset/prepare.py;
then the recipe's training command (its classes, batch x --grad-update-every,
learning rate, momentum, weight decay, augmentation) runs in-process with the
`tiny` network, 33x33 crops and two updates, and evaluate.py with the recipe's
test flags scores the val list: the report and the JSON name the dataset's
classes. COCO-Stuff's recipes train multi-scale (train_msc.py); 164k's runs
train.py here with the same flags, which both scripts take, to keep the test short.
"""

import json

import pytest

from deeplab_resnet import cli, datasets
from deeplab_resnet.cli import evaluate, train, train_msc
from test_datasets_prepare import (make_ade20k, make_cityscapes, make_cocostuff10k,
                                   make_cocostuff164k, prepare)

SGD = ["--learning-rate", "2.5e-4", "--momentum", "0.9", "--weight-decay", "5e-4",
       "--power", "0.9", "--random-mirror", "--random-scale"]
# name -> (archive maker, root below tmp_path, list key, training command, its flags,
#          evaluation flags, a class name the report must show); as in README.md.
RECIPES = {
    "cocostuff10k": (make_cocostuff10k, "cocostuff-10k-v1.1", "cocostuff10k", train_msc,
                     ["--num-classes", "182", "--batch-size", "5", "--grad-update-every", "2",
                      "--scale-mode", "caffe", *SGD],
                     ["--dataset", "cocostuff", "--deeplab-protocol", "--pad-size", "513"],
                     "hair brush"),
    "cocostuff164k": (make_cocostuff164k, "", "cocostuff164k", train,
                      ["--num-classes", "182", "--batch-size", "5", "--grad-update-every", "2",
                       "--scale-mode", "caffe", *SGD],
                      ["--dataset", "cocostuff", "--deeplab-protocol", "--pad-size", "513"],
                      "playingfield"),
    "cityscapes": (make_cityscapes, "", "cityscapes", train,
                   ["--num-classes", "19", "--batch-size", "10", *SGD],
                   ["--dataset", "cityscapes", "--deeplab-protocol"], "traffic light"),
    "ade20k": (make_ade20k, "", "ade20k", train,
               ["--num-classes", "150", "--batch-size", "10", *SGD],
               ["--dataset", "ade20k", "--deeplab-protocol"], "chest of drawers"),
}
TINY = ["--model", "tiny", "--input-size", "33,33", "--num-steps", "2",
        "--save-pred-every", "2", "--save-num-images", "0"]


def run_command(command, argv):
    with pytest.raises(SystemExit) as exit_info:
        cli.run(command.main, argv)
    return exit_info.value.code


@pytest.mark.parametrize("name", list(RECIPES))
def test_recipe_trains_and_evaluation_names_the_classes(name, tmp_path, capsys):
    make, folder, key, command, train_flags, eval_flags, class_name = RECIPES[name]
    root = tmp_path / folder if folder else tmp_path
    make(root)
    if name == "ade20k":
        root = root / "ADEChallengeData2016"
    prepare.main([name, "--root", str(root), "--list-dir", str(tmp_path)])
    snapshots = tmp_path / "snapshots"
    assert run_command(command, ["--data-dir", str(root),
                                 "--data-list", str(tmp_path / f"{key}_train.txt"),
                                 "--snapshot-dir", str(snapshots), *TINY, *train_flags]) == 0
    report = tmp_path / "scores.json"
    capsys.readouterr()
    assert run_command(evaluate, ["--data-dir", str(root),
                                  "--data-list", str(tmp_path / f"{key}_val.txt"),
                                  "--restore-from", str(snapshots), "--json-output", str(report),
                                  *eval_flags]) == 0
    out = capsys.readouterr().out
    assert f"  {class_name} " in out and out.strip().splitlines()[-1].startswith("Mean IoU: ")
    scores = json.loads(report.read_text())
    names, _ = datasets.classes(eval_flags[1])
    assert list(scores["per_class_iou"]) == names
    assert scores["settings"]["dataset"] == eval_flags[1]
