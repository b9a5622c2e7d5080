"""--config FILE.toml: keys are long flag names, the command line wins, unknown keys are one
line; every shipped config in configs/ reads through its command's parser, and the recipes'
configs say what the README's recipe commands say."""

import json
import os
import re

import pytest

from conftest import ROOT, run_command
from deeplab_resnet.cli import config_file, evaluate, train, train_flags
from deeplab_resnet.data import shapes
from deeplab_resnet.training import RECIPES, run_record
from deeplab_resnet.weights import checkpoint
from test_datasets_recipes import readme_recipes

CONFIGS = sorted((ROOT / "configs").glob("*.toml"))
SCRIPTS = {"train.py": "train", "train_msc.py": "train_msc", "fine_tune.py": "fine_tune"}


def command_of(path):
    """The script a shipped config is for: the one its comment runs with `--config` it."""
    found = re.search(r"python (\w+\.py) --config configs/" + re.escape(path.name),
                      path.read_text(encoding="utf-8"))
    assert found, f"{path.name}: no comment line 'python SCRIPT --config configs/{path.name}'"
    return found.group(1)


def parse(script, argv):
    """The parsed flags of a training script or evaluate.py, as its main parses them."""
    if script == "evaluate.py":
        return evaluate.get_arguments(argv)
    recipe = RECIPES[SCRIPTS[script]]
    return config_file.parse_args(train_flags.build_parser(recipe), argv)


def without_config(args):
    return {key: value for key, value in vars(args).items() if key != "config"}


def test_configs_ship_every_recipe_and_own_dataset():
    names = {path.stem for path in CONFIGS}
    assert {"voc2012", "own_dataset", *readme_recipes()} <= names
    assert {f"{name}_eval" for name in readme_recipes()} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.name)
def test_each_shipped_config_reads_through_its_commands_parser(path):
    args = parse(command_of(path), ["--config", str(path)])
    assert args.config == str(path)
    assert args.data_dir and args.data_list


@pytest.mark.parametrize("name", sorted(readme_recipes()))
def test_recipe_configs_say_what_the_readme_commands_say(name):
    _, (trainer, *train_args), (_, *eval_args) = readme_recipes()[name]
    path = ROOT / "configs" / f"{name}.toml"
    assert command_of(path) == trainer
    assert without_config(parse(trainer, ["--config", str(path)])) == \
        without_config(parse(trainer, train_args))
    path = ROOT / "configs" / f"{name}_eval.toml"
    assert without_config(parse("evaluate.py", ["--config", str(path)])) == \
        without_config(parse("evaluate.py", eval_args))


def test_voc_config_is_the_readme_training_command():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("## The real path, start to finish", 1)[1].split("```", 2)[1]
    line = re.search(r"python train\.py (.*?)\n(?!\s)", block.replace("\\\n", " ")).group(1)
    path = ROOT / "configs" / "voc2012.toml"
    assert without_config(parse("train.py", ["--config", str(path)])) == \
        without_config(parse("train.py", line.split()))


def test_command_line_wins_and_switches_and_lists_read(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('data_dir = "a"\nbatch_size = 3\ninput_size = [65, 97]\n'
                    'random_mirror = true\nrandom_scale = false\nlearning_rate = 1e-3\n')
    args = parse("train.py", ["--config", str(path), "--batch-size", "5", "--data-dir", "b"])
    assert (args.data_dir, args.batch_size, args.input_size) == ("b", 5, (65, 97))
    assert (args.random_mirror, args.random_scale, args.learning_rate) == (True, False, 1e-3)
    assert train_flags.config_from_args(args).config_file == str(path)


@pytest.mark.parametrize("text, message", [
    ("bach_size = 3\n", "unknown key 'bach_size': not a flag of"),
    ("random_mirror = 1\n", "key 'random_mirror' is a switch: give true or false"),
    ("batch_size = 0\n", "key 'batch_size': expected a positive integer, got '0'"),
    ("precision = \"fp8\"\n", "key 'precision' must be one of"),
    ("batch_size = [\n", "not valid TOML"),
    ("[training]\nbatch_size = 3\n", "unknown key 'training'"),
])
def test_bad_config_is_one_line_naming_key_and_file(tmp_path, capfd, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    status, out, err = run_command(train.main, ["--config", str(path)], capfd)
    assert status == 2
    assert err.count("\n") == 1 and err.startswith(f"error: {path}: ") and message in err, err


def test_missing_config_is_one_line(tmp_path, capfd):
    status, _, err = run_command(evaluate.main, ["--config", str(tmp_path / "no.toml")], capfd)
    assert status == 2 and err == f"error: --config {tmp_path / 'no.toml'}: no such file\n"


def test_run_record_and_evaluation_report_name_the_config(tmp_path, capfd):
    data = shapes.make_shapes_dataset(tmp_path / "data", seed=0)
    path = tmp_path / "tiny.toml"
    path.write_text(f'model = "tiny"\nnum_classes = {len(shapes.CLASSES)}\n'
                    f'data_dir = "{data["root"]}"\ndata_list = "{data["train"]}"\n'
                    'input_size = [32, 32]\nbatch_size = 2\nnum_steps = 2\n'
                    'save_pred_every = 2\nsave_num_images = 0\nis_training = true\n'
                    f'snapshot_dir = "{tmp_path / "snap"}"\n')
    status, _, err = run_command(train.main, ["--config", str(path)], capfd)
    assert status == 0, err
    record, step = run_record.read(checkpoint.latest_in(str(tmp_path / "snap")))
    assert step == 2 and record["config_file"] == str(path)
    # The same settings as flags (no config): the same run, resumed; the record says so.
    flags = ["--model", "tiny", "--num-classes", str(len(shapes.CLASSES)), "--data-dir",
             data["root"], "--data-list", data["train"], "--input-size", "32,32",
             "--batch-size", "2", "--num-steps", "3", "--save-pred-every", "2",
             "--save-num-images", "0", "--is-training", "--snapshot-dir", str(tmp_path / "snap")]
    status, out, err = run_command(train.main, flags, capfd)
    assert status == 0 and "resuming from" in out, err
    record, step = run_record.read(checkpoint.latest_in(str(tmp_path / "snap")))
    assert step == 3 and record["config_file"] is None
    evaluation = tmp_path / "eval.toml"
    evaluation.write_text(f'data_dir = "{data["root"]}"\ndata_list = "{data["val"]}"\n'
                          f'restore_from = "{tmp_path / "snap"}"\n')
    report = tmp_path / "scores.json"
    status, out, err = run_command(evaluate.main, ["--config", str(evaluation), "--num-steps",
                                                   "2", "--json-output", str(report)], capfd)
    assert status == 0, err
    assert json.loads(report.read_text())["settings"]["config"] == os.path.abspath(evaluation)
