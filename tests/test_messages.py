"""Messages that lead somewhere (issue 26 item 5): weights that are really an HTML page or text
are called that; a place that was not given is said to be the default; names and contents are
escaped and cut; a setting is named by its field in the library and by its flag in commands."""

import argparse
import ast
import importlib
import re

import pytest

import conftest
from deeplab_resnet import Segmenter, cli, convert, training
from deeplab_resnet.cli import train_flags
from deeplab_resnet.errors import (BadFileError, DeepLabError, SettingError, counted, shown,
                                   progress_line)
from deeplab_resnet.files import disguise, not_a

HTML = b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body></body></html>\n"
KINDS = {"w.caffemodel": "a caffemodel", "w.npz": "an .npz of weights",
         "model.ckpt-5.index": "a checkpoint", "deeplab_resnet.ckpt": "a checkpoint"}


@pytest.mark.parametrize("name", sorted(KINDS))
def test_weights_that_are_an_html_page_are_called_that(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(HTML)
    weights = str(path)[: -len(".index")] if name.endswith(".index") else str(path)
    with pytest.raises(BadFileError) as refused:
        Segmenter.load(weights)
    assert str(refused.value) == (f"{path}: an HTML page, not {KINDS[name]}: was the download "
                                  "complete?")


@pytest.mark.parametrize("content, what", [
    (b"<html><body>Sign in</body></html>", "an HTML page"),
    (b"\xef\xbb\xbf  <!doctype HTML><p>x", "an HTML page"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\n", "a Git LFS pointer"),
    (b"Access denied.\n", "a text file"),
    (b"\0" * 5000, "a file of NUL bytes"),
    (b"", "an empty file"),
    (b"\x08\x96\x01\xff\xfe binary", None),
])
def test_disguise_tells_what_a_file_really_is(tmp_path, content, what):
    path = tmp_path / "f"
    path.write_bytes(content)
    assert disguise(path) == what
    assert disguise(tmp_path / "missing") is None


def test_a_text_prototxt_is_judged_by_its_syntax_not_called_text(tmp_path):
    path = tmp_path / "deploy.prototxt"
    path.write_text("this is not a net\n")
    assert not_a(path, "a prototxt", text=True) is None
    with pytest.raises(BadFileError, match="prototxt syntax error"):
        convert(str(path), code_path=str(tmp_path / "net.py"))


def test_an_html_or_nul_prototxt_is_called_that_in_one_short_line(tmp_path):
    page = tmp_path / "page.prototxt"
    page.write_bytes(HTML)
    with pytest.raises(BadFileError, match="page.prototxt: an HTML page, not a prototxt: was "
                                           "the download complete"):
        convert(str(page), code_path=str(tmp_path / "net.py"))
    nul = tmp_path / "nul.prototxt"
    nul.write_bytes(b"\0" * 4096)
    with pytest.raises(BadFileError) as refused:
        convert(str(nul), code_path=str(tmp_path / "net.py"))
    message = str(refused.value)
    assert "\0" not in message and len(message) < 200
    assert message.endswith("nul.prototxt: a file of NUL bytes, not a prototxt: was it ever "
                            "written out completely?")


def test_a_garbled_prototxt_is_escaped_and_cut(tmp_path):
    path = tmp_path / "bad.prototxt"
    path.write_bytes(b"layer { name: \x01\x02" + b"\x00\x1b" * 3000 + b"}\n")
    with pytest.raises(BadFileError) as refused:
        convert(str(path), code_path=str(tmp_path / "net.py"))
    message = str(refused.value)
    assert message.isprintable() and len(message) < 600, message


def test_shown_escapes_and_cuts():
    assert shown("a\0b\n\x1b[2Jc\udcff") == "a\\x00b\\n\\x1b[2Jc\\udcff"
    assert shown("é 日本") == "é 日本"
    long = shown("x" * 500)
    assert long == "x" * 160 + "... (500 characters)"
    assert str(DeepLabError("bad \0 name")) == "bad \\x00 name"
    assert str(SettingError("{data_dir} a\nb: no such folder", "data_dir")) == (
        "data_dir a\\nb: no such folder")


def test_counts_agree_in_number():
    assert [counted(n, "image") for n in (0, 1, 2)] == ["0 images", "1 image", "2 images"]
    assert counted(1, "mini-batch", "mini-batches") == "1 mini-batch"
    assert counted(3, "mini-batch", "mini-batches") == "3 mini-batches"
    assert progress_line("evaluate.py", "image", 3, 10, ["running mean IoU 0.5000"], 2.0, 3.5) \
        == "evaluate.py: image 3/10, running mean IoU 0.5000, 2.00 images/s, ETA 4 s"


def run_train(argv, capfd):
    return conftest.run_command(lambda a: train_flags.main(training.TRAIN, a), argv, capfd)


def test_a_missing_default_data_dir_says_it_is_the_default(tmp_path, capfd, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, _, err = run_train(["--model", "tiny"], capfd)
    default = train_flags.build_parser(training.TRAIN).get_default("data_dir")
    assert status == 2 and err.strip().splitlines() == [
        f"error: --data-dir {default}: no such folder (the default, as --data-dir was not "
        "given; give --data-dir)"]
    status, _, err = run_train(["--model", "tiny", "--data-dir", str(tmp_path / "no")], capfd)
    assert status == 2 and err.strip().splitlines() == [
        f"error: --data-dir {tmp_path / 'no'}: no such folder"]
    status, _, err = run_train(["--model", "tiny", f"--data-dir={tmp_path / 'no'}"], capfd)
    assert "the default" not in err


# Settings of the Python API alone (no command has a flag for them).
API_ONLY = {"image", "config"}


def library_fields():
    """Every setting field a library message names literally (SettingError and logged
    templates), read from the sources."""
    fields = set()
    for path in sorted((conftest.ROOT / "deeplab_resnet").rglob("*.py")):
        if "cli" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            name = getattr(node, "func", None)
            name = getattr(name, "id", getattr(name, "attr", None))
            if isinstance(node, ast.Call) and name in ("SettingError", "_log"):
                fields.update(arg.value for arg in node.args[1:]
                              if isinstance(arg, ast.Constant) and isinstance(arg.value, str))
    return fields


def command_flags(monkeypatch):
    """Every option string of every installed command."""
    text = (conftest.ROOT / "pyproject.toml").read_text()
    section = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    flags = set()

    class Parsed(Exception):
        pass

    def capture(parser, args=None, namespace=None):
        raise Parsed(parser)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    for module in re.findall(r'"([\w.]+):entry"', section):
        with pytest.raises(Parsed) as parsed:
            importlib.import_module(module).main([])
        flags.update(s for action in parsed.value.args[0]._actions
                     for s in action.option_strings)
    return flags


def test_every_setting_a_library_message_names_is_a_flag_of_the_commands(monkeypatch):
    fields = library_fields()
    assert {"batch_size", "input_size", "data_dir", "snapshot_dir", "variant"} <= fields
    flags = command_flags(monkeypatch)
    missing = sorted(f"{field} -> {cli.flag_name(field)}" for field in fields - API_ONLY
                     if cli.flag_name(field) not in flags)
    assert not missing, missing
