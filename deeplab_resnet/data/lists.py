"""List files: 'IMAGE_PATH [LABEL_PATH]' per line, relative to a data folder, checked."""

import codecs
import os

from deeplab_resnet.errors import BadFileError, SettingError, shown


def data_path(data_dir, path):
    """VOC lists start paths with '/', meaning relative to the data folder."""
    if data_dir is None:
        return path
    return os.path.join(data_dir, path.lstrip("/"))


def _decode_list(data, source):
    """A list file's text: UTF-8 (a byte-order mark is dropped), or UTF-16 when it
    starts with a UTF-16 byte-order mark. Other encodings are refused, naming the line:
    guessing an encoding could turn file names into other, wrong ones."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            raise SettingError(f"{{data_list}} {source}: not valid UTF-16 text despite its "
                               "UTF-16 byte-order mark", "data_list") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise BadFileError(f"{source}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); "
                           "save the list as UTF-8", path=source) from None


def read_list(data_dir, data_list, with_labels=True):
    """Parses and checks a list file.

    Args:
        data_dir: folder the listed paths are relative to (None: as written).
        data_list: list file, one 'IMAGE_PATH LABEL_PATH' per line (or just
            'IMAGE_PATH' when `with_labels` is False); blank lines are skipped.
        with_labels: True: each line must name a label file; False: labels
            are optional, but every line names one or none does (a test set).
    Returns:
        (image paths, label paths) as lists of strings; label paths is empty
        for a list without labels.
    Raises:
        SettingError (`data_list`) for a missing, unreadable or empty list;
        BadFileError naming the list file and line for a list that is not
        text, a malformed line (or, without `with_labels`, a line unlike the
        first) or a listed file that is missing (a SettingError naming
        `data_dir` when none is given).
    """
    if data_list is None:
        raise SettingError("{data_list} is required", "data_list")
    if data_dir is not None and not os.path.isdir(data_dir):
        raise SettingError(f"{{data_dir}} {data_dir}: no such folder", "data_dir")
    try:
        with open(data_list, "rb") as f:
            lines = _decode_list(f.read(), data_list).splitlines()
    except FileNotFoundError:
        raise SettingError(f"{{data_list}} {data_list}: no such file", "data_list") from None
    except OSError as exc:
        raise SettingError(f"{{data_list}} {data_list}: cannot read ({exc.strerror or exc})",
                           "data_list") from None
    allowed, form = ((2,), "'IMAGE_PATH LABEL_PATH'") if with_labels else \
        ((1, 2), "'IMAGE_PATH [LABEL_PATH]'")
    images, labels = [], []
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) not in allowed:
            raise BadFileError(f"{data_list}:{number}: expected {form}, got "
                               f"'{shown(line.strip(), 80)}'", path=data_list)
        if images and (len(fields) == 2) != bool(labels):
            raise BadFileError(f"{data_list}:{number}: "
                               f"{'names a label' if labels == [] else 'names no label'} unlike "
                               "the lines before it: every line names a label file or none does",
                               path=data_list)
        paths = [data_path(data_dir, p) for p in fields]
        for path in paths:
            if not os.path.isfile(path) and data_dir is None:
                raise SettingError(f"{data_list}:{number}: {path}: no such file (no {{data_dir}} "
                                   "given: the list's paths are read as written; give "
                                   "{data_dir}, the folder they are relative to)", "data_dir")
            if not os.path.isfile(path):
                raise BadFileError(f"{data_list}:{number}: {path}: no such file", path=path)
        images.append(paths[0])
        labels.extend(paths[1:])
    if not images:
        raise SettingError(f"{{data_list}} {data_list}: the list is empty", "data_list")
    return images, labels
