"""Flags (issue 26 item 4): no silent abbreviations, "did you mean" for a close unknown flag,
a value that starts with a minus sign read as the value, and `--help` of every command
answered without importing TensorFlow (real processes: what a process imports is the point)."""

import subprocess
import sys

import pytest

from conftest import ROOT
from deeplab_resnet import cli
from deeplab_resnet.cli import predict_flags, train_flags
from deeplab_resnet.training import TRAIN

SCRIPTS = ("train", "train_msc", "fine_tune", "evaluate", "inference", "export", "convert",
           "demo")


def error_of(parser, argv, capsys):
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.count("\n") == 1, err
    return err.strip()


@pytest.fixture
def train_parser():
    return train_flags.build_parser(TRAIN)


def test_a_prefix_of_a_flag_is_not_the_flag(train_parser, capsys):
    err = error_of(train_parser, ["--restore", "x.ckpt"], capsys)
    assert "unrecognized arguments: --restore x.ckpt (did you mean --restore-from?)" in err
    assert train_parser.parse_args(["--restore-from", "x"]).restore_from == "x"


def test_an_unknown_flag_is_told_the_closest_one(train_parser, capsys):
    err = error_of(train_parser, ["--num-clases", "5"], capsys)
    assert err.endswith("(did you mean --num-classes?) (see --help)")
    err = error_of(train_parser, ["--nm-classes=5"], capsys)
    assert "(did you mean --num-classes?)" in err
    err = error_of(train_parser, ["--zzzzzz"], capsys)  # nothing close: no guess
    assert "did you mean" not in err and "--zzzzzz" in err


def test_every_command_parser_refuses_abbreviations():
    parsers = [train_flags.build_parser(TRAIN), cli.ArgumentParser()]
    assert all(parser.allow_abbrev is False for parser in parsers)
    predict = cli.ArgumentParser()
    predict_flags.add_prediction_args(predict)
    assert predict.allow_abbrev is False


@pytest.mark.parametrize("argv, wanted", [
    (["--input-size", "-5,64"], "argument --input-size: expected (height, width), each an "
                                  "integer of at least 32, got '-5,64'"),
    (["--learning-rate", "-0.1"], "argument --learning-rate: expected a positive number, got "
                                  "'-0.1'"),
    (["--batch-size", "-3"], "argument --batch-size: expected a positive integer, got '-3'"),
    (["--data-dir", "--batch-size", "2"], "argument --data-dir: expected one argument"),
])
def test_a_value_with_a_minus_sign_is_judged_as_a_value(train_parser, capsys, argv, wanted):
    assert wanted in error_of(train_parser, argv, capsys)


def test_control_characters_in_a_bad_value_are_escaped(train_parser, capsys):
    err = error_of(train_parser, ["--batch-size", "a\x00b\x1b[31m"], capsys)
    assert "a\\x00b\\x1b[31m" in err and "\x00" not in err


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_answers_without_importing_tensorflow(script):
    """The script's process imports no TensorFlow module (`-X importtime` lists every one)."""
    result = subprocess.run([sys.executable, "-X", "importtime", f"{script}.py", "--help"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout and "--help" in result.stdout
    imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()
                if line.startswith("import time:")]
    assert imported and not [name for name in imported if name.split(".")[0] == "tensorflow"]


def test_asks_for_help():
    assert cli.asks_for_help(["--data-dir", "x", "-h"])
    assert cli.asks_for_help(["--help"])
    assert not cli.asks_for_help(["--data-dir", "x"])
    assert not cli.asks_for_help(["--", "--help"])
