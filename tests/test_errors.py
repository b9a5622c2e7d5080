"""Errors that say what they are (issue 25 item 4): a bad image, label or list is a
`BadFileError` with `.path`; the library knows no exit statuses; messages that name settings
show the API's names in the library and the flags in the commands."""

import logging
import os
import re

import numpy as np
import pytest
from PIL import Image

from deeplab_resnet import cli, errors
from deeplab_resnet.cli.reporting import reporting
from deeplab_resnet.data.images import read_image
from deeplab_resnet.data.labels import read_label
from deeplab_resnet.data.lists import read_list
from deeplab_resnet.errors import BadFileError, NamingSettings
from deeplab_resnet.predict.segmenter import as_rgb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bad_files(folder):
    """{what: path} of image files that cannot be used."""
    empty = folder / "empty.png"
    empty.write_bytes(b"")
    text = folder / "text.jpg"
    text.write_text("<html>not an image</html>")
    truncated = folder / "truncated.png"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:60])
    return {"missing": folder / "missing.png", "empty": empty, "text": text,
            "truncated": truncated, "folder": folder}


@pytest.mark.parametrize("read", [read_image, as_rgb, read_label])
def test_a_bad_image_or_label_is_a_bad_file_error_with_its_path(read, tmp_path):
    for what, path in bad_files(tmp_path).items():
        with pytest.raises(BadFileError) as info:
            read(path)
        assert info.value.path == str(path), what
        assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_a_bad_list_line_or_listed_file_is_a_bad_file_error(tmp_path):
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "a.png")
    listing = tmp_path / "list.txt"
    for content, path in (("a.png a.png extra\n", listing), ("b.png a.png\n", tmp_path / "b.png"),
                          ("a.png a.png\na.png\n", listing)):
        listing.write_text(content)
        with pytest.raises(BadFileError) as info:
            read_list(str(tmp_path), str(listing))
        assert info.value.path == str(path), content
    listing.write_bytes(b"a.png \xff.png\n")
    with pytest.raises(BadFileError, match="not UTF-8"):
        read_list(str(tmp_path), str(listing))


def test_the_library_knows_no_exit_status():
    """Exit statuses (and `Stopped`) belong to the commands."""
    assert not hasattr(errors, "Stopped") and issubclass(cli.Stopped, Exception)
    found = []
    for folder, _, names in os.walk(os.path.join(ROOT, "deeplab_resnet")):
        if os.path.basename(folder) == "cli":
            continue
        for name in names:
            if name.endswith(".py"):
                with open(os.path.join(folder, name), encoding="utf-8") as f:
                    if re.search(r"exit_status|sys\.exit|os\._exit", f.read()):
                        found.append(name)
    assert found == []


def test_a_message_naming_settings_reads_as_fields_in_the_library_and_as_flags_in_commands(
        capsys, caplog):
    message = NamingSettings("{num_steps} 3 reached; a larger {num_steps} continues, or "
                             "{new_head}", "num_steps", "new_head")
    assert str(message) == "num_steps 3 reached; a larger num_steps continues, or new_head"
    logger = logging.getLogger("deeplab_resnet.test")
    with caplog.at_level(logging.INFO, logger="deeplab_resnet"):
        logger.info(message)
    assert caplog.records[-1].getMessage() == str(message)
    with reporting(name_of=cli.flag_name):
        logger.info(message)
    assert capsys.readouterr().out == (
        "--num-steps 3 reached; a larger --num-steps continues, or --not-restore-last\n")
