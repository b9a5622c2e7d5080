"""Writing files as a plain `open()` would, but atomically: temporary files, modes, folders.

Every output of the project (masks, `.npz`, JSON, SavedModels, checkpoints' companions) is
written to a temporary path beside its destination and renamed into place only when complete,
with the mode a plain `open()`/`mkdir()` gives under the process umask.
"""

import contextlib
import os
import tempfile

import numpy as np

from deeplab_resnet.errors import DeepLabError, SettingError, shown


def current_umask():
    """The process umask (read by setting it, so set back at once; Python has no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def plain_mode(path):
    """Gives a temporary file or folder the mode a plain open()/mkdir() would: 0666/0777 & ~umask.

    mkstemp and mkdtemp create 0600 and 0700 whatever the umask, and the mode
    survives the rename into place.
    """
    base = 0o777 if os.path.isdir(path) else 0o666
    os.chmod(path, base & ~current_umask())


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path`; renamed onto it only if the block succeeds."""
    path = str(path)
    folder = os.path.dirname(os.path.abspath(path))
    suffix = os.path.splitext(path)[1]
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=folder)
    except OSError as exc:
        raise DeepLabError(f"{folder}: cannot write here ({exc.strerror})") from None
    os.close(fd)
    try:
        plain_mode(tmp)
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
