"""Settings that check themselves: TrainConfig and PredictConfig refuse a bad field when they
are made, naming it; the commands' flag types apply the same rules (issue 25 item 3)."""

import argparse
import dataclasses
import re

import pytest

from deeplab_resnet import cli, settings
from deeplab_resnet.errors import SettingError
from deeplab_resnet.predict.config import PredictConfig
from deeplab_resnet.predict.crf import CRFParams
from deeplab_resnet.training.config import TrainConfig


@pytest.mark.parametrize("field,value", [
    ("batch_size", 0), ("batch_size", 2.0), ("batch_size", True), ("num_steps", -1),
    ("grad_update_every", None), ("num_classes", 0), ("variant", "resnet18"),
    ("precision", "int8"), ("strategy", "tpu"), ("scale_mode", "random"),
    ("learning_rate", 0.0), ("learning_rate", float("nan")), ("momentum", -0.1),
    ("bn_momentum", 1.0), ("input_size", (321,)), ("input_size", (8, 8)),
    ("scales", ()), ("scales", (1.0, -0.5)), ("ignore_label", 256), ("random_mirror", "yes"),
    ("class_names", ("background", "")), ("data_list", ""), ("stop_after", 0),
    ("save_num_images", -1), ("random_seed", 1.5)])
def test_a_bad_training_setting_is_refused_naming_its_field(field, value):
    with pytest.raises(SettingError) as info:
        TrainConfig(**{field: value})
    assert info.value.field == field
    assert str(info.value).startswith(f"{field} must be ")


def test_a_good_training_config_keeps_its_values_and_lists_become_tuples():
    config = TrainConfig(input_size=[65, 81], scales=[1.0, 0.5], class_names=["a", "b"],
                         variant="tiny", num_classes=2, stop_after=None)
    assert (config.input_size, config.scales, config.class_names) == (
        (65, 81), (1.0, 0.5), ("a", "b"))
    assert TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(SettingError, match="batch_size must be a positive integer"):
        dataclasses.replace(config, batch_size=0)


@pytest.mark.parametrize("field,value", [
    ("variant", "resnet18"), ("num_classes", 0), ("precision", "int8"), ("scales", (1.0, 0)),
    ("flip", 1), ("deeplab_protocol", "no"), ("pad_size", 0), ("crf", "yes"),
    ("class_names", ["x", 3]), ("dataset", "imagenet"), ("prototxt", "")])
def test_a_bad_prediction_setting_is_refused_naming_its_field(field, value):
    with pytest.raises(SettingError) as info:
        PredictConfig(**{field: value})
    assert info.value.field == field


def test_prediction_config_of_settings():
    config = PredictConfig.of(scales=[1.0, 0.5], crf=True)
    assert config.scales == (1.0, 0.5) and config.crf_params == CRFParams()
    assert PredictConfig.of(config, flip=True) == dataclasses.replace(config, flip=True)
    assert PredictConfig().crf_params is None and PredictConfig(crf=False).crf_params is None
    with pytest.raises(SettingError, match="not a prediction setting: scale"):
        PredictConfig.of(scale=(1.0,))
    with pytest.raises(SettingError) as info:
        PredictConfig.of({"flip": True})
    assert info.value.field == "config"


@pytest.mark.parametrize("flag_type,rule,good,bad", [
    (cli.positive_int, settings.POSITIVE_INT, "1", "0"),
    (cli.non_negative_int, settings.NON_NEGATIVE_INT, "0", "-1"),
    (cli.positive_float, settings.POSITIVE_NUMBER, "0.5", "inf"),
    (cli.non_negative_float, settings.NON_NEGATIVE_NUMBER, "0", "-0.5"),
    (cli.unit_interval, settings.FRACTION, "0.5", "1.0"),
    (cli.input_size, settings.INPUT_SIZE, "32,40", "31,40"),
    (cli.scales, settings.SCALES, "1,0.5", "1,0"),
    (cli.class_names, settings.CLASS_NAMES, "a,b", "a,,b"),
    (cli.label_value, settings.LABEL_VALUE, "255", "256")])
def test_the_flag_types_apply_the_librarys_rules(flag_type, rule, good, bad):
    assert rule.accept(flag_type(good))
    with pytest.raises(argparse.ArgumentTypeError, match=re.escape(f"expected {rule.wanted}")):
        flag_type(bad)


def test_a_setting_error_of_a_config_names_the_flag_in_a_command(capsys):
    def main(argv):
        TrainConfig(batch_size=0)

    with pytest.raises(SystemExit) as info:
        cli.run(main, tensorflow=False)
    assert info.value.code == 2
    assert capsys.readouterr().err == "error: --batch-size must be a positive integer, got 0\n"
