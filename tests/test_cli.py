"""The shared command-line contract: flag types and one-line errors."""

import argparse
import errno

import pytest

from deeplab_resnet import cli
from deeplab_resnet.errors import DeepLabError


def exit_of(main, capsys):
    with pytest.raises(SystemExit) as info:
        cli.run(main)
    return info.value.code, capsys.readouterr().err


def test_user_error_is_one_line_exit_2(capsys):
    def main(argv):
        raise DeepLabError("data.txt:3: no such file")
    assert exit_of(main, capsys) == (2, "error: data.txt:3: no such file\n")


def test_os_error_names_the_file(capsys):
    def main(argv):
        raise OSError(errno.ENOSPC, "No space left on device", "/out/model.ckpt")
    assert exit_of(main, capsys) == (1, "error: /out/model.ckpt: No space left on device\n")


def test_out_of_memory_is_one_line(capsys):
    def main(argv):
        raise MemoryError()
    code, err = exit_of(main, capsys)
    assert code == 1 and err.count("\n") == 1 and err.startswith("error: out of memory")


def test_bugs_keep_their_traceback():
    def main(argv):
        raise ZeroDivisionError("bug")
    with pytest.raises(ZeroDivisionError):
        cli.run(main)


def test_parser_errors_are_one_line(capsys):
    parser = cli.ArgumentParser(prog="train.py")
    parser.add_argument("--input-size", type=cli.input_size)
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["--input-size", "12"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1
    assert err.startswith("error: train.py: argument --input-size:")


@pytest.mark.parametrize("parse,text,ok", [
    (cli.input_size, "321,321", (321, 321)), (cli.input_size, "64,80", (64, 80)),
    (cli.input_size, "321x321", None), (cli.input_size, "8,8", None),
    (cli.scales, "1.0,0.75,0.5", (1.0, 0.75, 0.5)), (cli.scales, "1,-1", None),
    (cli.positive_int, "3", 3), (cli.positive_int, "0", None),
    (cli.non_negative_int, "0", 0), (cli.positive_float, "nan", None),
    (cli.non_negative_float, "0", 0.0), (cli.unit_interval, "0.999", 0.999),
    (cli.unit_interval, "1", None)])
def test_flag_types(parse, text, ok):
    if ok is None:
        with pytest.raises(argparse.ArgumentTypeError):
            parse(text)
    else:
        assert parse(text) == ok


def test_setting_errors_name_the_flag(capsys):
    from deeplab_resnet.errors import SettingError

    error = SettingError("{snapshot_dir} /x: folder is not writable; or add {new_head}",
                         "snapshot_dir", "new_head")
    assert str(error) == "snapshot_dir /x: folder is not writable; or add new_head"

    def main(argv):
        raise error
    assert exit_of(main, capsys) == (
        2, "error: --snapshot-dir /x: folder is not writable; or add --not-restore-last\n")
