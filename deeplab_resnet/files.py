"""Writing files as a plain `open()` would, but atomically: temporary files, modes, folders.

Every output of the project (masks, `.npz`, JSON, SavedModels, checkpoints' companions) is
written to a temporary path beside its destination and renamed into place only when complete,
with the mode a plain `open()`/`mkdir()` gives under the process umask: the temporaries are
created with 0666/0777 and the kernel applies the umask, so nothing reads or sets it (setting it,
the only way Python reads it, would race with any thread creating a file meanwhile).
"""

import contextlib
import os
import secrets

import numpy as np

from deeplab_resnet.errors import DeepLabError, SettingError, shown


def _new_temporary(folder, prefix, suffix, create):
    """A new path `folder/<prefix><random><suffix>` that `create(path)` made (never an
    existing one)."""
    for _ in range(100):
        path = os.path.join(folder, f"{prefix}{secrets.token_hex(8)}{suffix}")
        try:
            create(path)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"{folder}: no unused temporary name")


def temporary_file(folder, suffix=""):
    """Creates an empty file in `folder` with the mode a plain open() gives (0666 & ~umask)."""
    def create(path):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    return _new_temporary(folder, ".tmp-", suffix, create)


def temporary_dir(folder, prefix=".tmp-"):
    """Creates a folder in `folder` with the mode a plain mkdir() gives (0777 & ~umask)."""
    return _new_temporary(folder, prefix, "", lambda path: os.mkdir(path, 0o777))


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path`; renamed onto it only if the block succeeds."""
    path = str(path)
    folder = os.path.dirname(os.path.abspath(path))
    suffix = os.path.splitext(path)[1]
    try:
        tmp = temporary_file(folder, suffix)
    except OSError as exc:
        raise DeepLabError(f"{folder}: cannot write here ({exc.strerror})") from None
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        # Name the file the user asked for, not the temporary one (e.g. disk full).
        raise OSError(exc.errno, exc.strerror or str(exc), path) from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_npy(array, path):
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)


def save_npz(arrays, path):
    """Writes {name: array} as a plain .npz (no pickle), atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def writable_dir(path, field):
    """Creates folder `path` if needed and returns it; an error naming the setting `field`
    (e.g. "snapshot_dir") if it cannot be created or written."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise SettingError(f"{{{field}}} {path}: cannot create folder ({exc.strerror})",
                           field) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise SettingError(f"{{{field}}} {path}: folder is not writable", field)
    return path


def unused_path(path):
    """A sibling of `path` that does not exist yet, for messages offering a new folder:
    'snapshots/' -> 'snapshots_2' (or _3, ... when taken)."""
    base = str(path).rstrip("/" + os.sep) or str(path)
    number = 2
    while os.path.lexists(f"{base}_{number}"):
        number += 1
    return f"{base}_{number}"


_SNIFFED_BYTES = 4096  # how much of a file `disguise` reads


def disguise(path):
    """What a file that should hold binary data (weights) holds instead, when it is plainly
    something else: 'an HTML page', 'a Git LFS pointer', 'a text file', 'a file of NUL bytes'
    or 'an empty file'; None when it is none of these (or cannot be read)."""
    try:
        with open(path, "rb") as f:
            head = f.read(_SNIFFED_BYTES)
    except OSError:
        return None
    if not head:
        return "an empty file"
    if not head.strip(b"\0"):
        return "a file of NUL bytes"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # not only a character cut at the end of the head
            return None
        text = head[:exc.start].decode("utf-8")
    text = text.removeprefix("\ufeff")  # a byte-order mark
    if not all(char.isprintable() or char in "\t\n\r\f" for char in text):
        return None
    start = text.lstrip(" \t\r\n").lower()
    if start.startswith(("<!doctype html", "<html", "<head", "<?xml")) or "<html" in start:
        return "an HTML page"
    if start.startswith("version https://git-lfs"):
        return "a Git LFS pointer"
    return "a text file"


def not_a(path, kind, text=False):
    """The message for a file that is plainly not `kind` ("a caffemodel", "a checkpoint"):
    '<path>: an HTML page, not a caffemodel: was the download complete?'; None when
    `disguise` recognises nothing (`text`: a text file is what `kind` is, e.g. a prototxt)."""
    what = disguise(path)
    if what is None or (text and what == "a text file"):
        return None
    hint = {"a file of NUL bytes": "was it ever written out completely?",
            "a Git LFS pointer": "fetch the file itself (git lfs pull)"}.get(
                what, "was the download complete?")
    return f"{shown(path)}: {what}, not {kind}: {hint}"
