"""The shared command-line contract: flag types and one-line errors."""

import argparse
import errno
import importlib
import logging
import os
import re
import sys

import pytest

from deeplab_resnet import cli
from deeplab_resnet.cli import evaluate
from deeplab_resnet.errors import DeepLabError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


def installed_commands():
    """{command: "module:entry"} of pyproject.toml's [project.scripts] (no tomllib on 3.10)."""
    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as f:
        section = f.read().split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    return dict(re.findall(r'^([\w-]+) = "([\w.]+:\w+)"$', section, re.MULTILINE))


COMMANDS = installed_commands()


class _Parsed(Exception):
    """Carries a command's parser out of its `main` instead of parsing."""


def parser_of(command, monkeypatch):
    """The argument parser of an installed command, built by its own `main`, which stops there."""
    module = importlib.import_module(COMMANDS[command].split(":")[0])

    def capture(parser, args=None, namespace=None):
        raise _Parsed(parser)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    with pytest.raises(_Parsed) as parsed:
        module.main([])
    return parsed.value.args[0]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_flag_has_help_showing_its_default_as_typed(command, monkeypatch):
    """Issue 18 item 10: `--input-size 321,321` reads '(default: 321,321)', not '(321, 321)'."""
    parser = parser_of(command, monkeypatch)
    formatter = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        name = f"{command} {'/'.join(action.option_strings) or action.dest}"
        assert action.help and action.help.strip(), f"{name}: no help"
        shown = formatter._expand_help(action)
        default = action.default
        if default is None or default is False or default == argparse.SUPPRESS:
            continue  # a flag that is off or not given by default: its help says what happens
        forms = {cli.typed(default)} | ({format(default, "g")} if isinstance(default, float)
                                        else set())
        assert "default" in shown and any(form in shown for form in forms), (name, shown)
        if isinstance(default, tuple):
            assert str(default) not in shown, (name, shown)


def test_evaluate_without_data_dir_names_it_and_following_it_gets_past(tmp_path, capsys):
    """A list of VOC-style paths ('/JPEGImages/...') read without --data-dir."""
    root = tmp_path / "voc"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "JPEGImages" / "a.jpg").write_bytes(b"")
    listed = tmp_path / "val.txt"
    listed.write_text("/JPEGImages/a.jpg\n")
    args = ["--data-list", str(listed), "--restore-from", str(tmp_path / "no_ckpt"),
            "--voc-submission", str(tmp_path / "out")]
    code, err = exit_of(lambda argv: evaluate.main(args), capsys)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"error: {listed}:1: /JPEGImages/a.jpg: no such file (no --data-dir "
                          "given: the list's paths are read as written; give --data-dir, the "
                          "folder they are relative to)")
    code, err = exit_of(lambda argv: evaluate.main(args + ["--data-dir", str(root)]), capsys)
    assert code == 2 and "no_ckpt" in err and "--data-dir" not in err


def test_the_walk_sees_every_command():
    """Every command module (one with an `entry`) is an installed command the walk covers."""
    folder = os.path.join(ROOT, "deeplab_resnet", "cli")
    sources = {name[:-3]: open(os.path.join(folder, name)).read()
               for name in os.listdir(folder) if name.endswith(".py")}
    modules = {f"deeplab_resnet.cli.{name}" for name, text in sources.items()
               if "\ndef entry(" in text}
    assert modules and modules == {target.split(":")[0] for target in COMMANDS.values()}


def test_evaluate_leaves_no_empty_output_folder_when_the_weights_fail(tmp_path, capsys):
    """--save-dir and the --json-output folder are made before the weights load (a bad
    folder fails at once); weights that fail to load leave neither behind."""
    (tmp_path / "a.jpg").write_bytes(b"")
    (tmp_path / "a.png").write_bytes(b"")
    listed = tmp_path / "val.txt"
    listed.write_text("/a.jpg /a.png\n")
    args = ["--data-dir", str(tmp_path), "--data-list", str(listed),
            "--restore-from", str(tmp_path / "no_ckpt"), "--save-dir", str(tmp_path / "pred"),
            "--json-output", str(tmp_path / "scores" / "s.json")]
    code, err = exit_of(lambda argv: evaluate.main(args), capsys)
    assert code == 2 and err.count("\n") == 1 and "no_ckpt" in err, err
    assert not (tmp_path / "pred").exists() and not (tmp_path / "scores").exists()


class _Left(Exception):
    """os._exit, recorded instead of leaving the test process."""


def _raise(exc):
    raise exc


@pytest.mark.parametrize("outcome,status,err", [
    (lambda: 0, 0, ""),
    (lambda: 3, 3, ""),
    (lambda: _raise(DeepLabError("bad.txt: no such file")), 2, "error: bad.txt: no such file\n"),
    (lambda: sys.exit("a message"), 1, "a message\n"),
], ids=["success", "status", "bad-input", "exit-message"])
def test_a_command_process_leaves_at_once_with_its_status(outcome, status, err, capsys,
                                                          monkeypatch):
    """`run_and_exit` (every network command's `entry`) ends the process with os._exit once the
    work is done, after flushing; the status and stderr are those `run` gives."""
    left = []

    def leave(code):
        left.append(code)
        raise _Left

    monkeypatch.setattr(os, "_exit", leave)
    # logging.shutdown would close pytest's own handlers: recorded instead.
    monkeypatch.setattr(logging, "shutdown", lambda: left.append("logging flushed"))
    monkeypatch.setattr(sys, "argv", ["cmd"])
    with pytest.raises(_Left):
        cli.run_and_exit(lambda argv: outcome())
    assert left == ["logging flushed", status] and capsys.readouterr().err == err


def test_every_command_leaves_through_run_and_exit():
    """Every installed command uses the network, so each one's process leaves at once."""
    for target in COMMANDS.values():
        module = importlib.import_module(target.split(":")[0])
        with open(module.__file__, encoding="utf-8") as f:
            assert "\n    cli.run_and_exit(main)\n" in f.read(), module.__name__
