"""One run per snapshot folder: an exclusive OS file lock on `<snapshot_dir>/.lock`.

`train` holds it for the whole run (in a multi-worker run, the chief alone). It is an
`fcntl.flock` lock, so the operating system frees it the moment its process ends, even
when killed (`kill -9`); the file holds who holds it (process id, host, start time) for
the message a second run gives. The holder removes the file when it lets go. Readers
(evaluation, export, inference from the folder) take no lock: a checkpoint becomes
visible only once it is complete (TensorFlow renames its files into place and names it
in the `checkpoint` state file last).

Imports no TensorFlow.
"""

import contextlib
import datetime
import fcntl
import json
import os
import socket

from deeplab_resnet.errors import SettingError, WriteError, shown
from deeplab_resnet.files import writable_dir

LOCK_NAME = ".lock"


@contextlib.contextmanager
def holding(folder, field="snapshot_dir", lock=True):
    """Creates `folder` if needed and holds its lock while the block runs.

    Args:
        folder: the snapshot folder.
        field: the setting that names it, for the error.
        lock: False: only create the folder (a multi-worker run's other workers).
    Raises:
        SettingError naming `field`, the folder and the holder when another process
        holds the lock (nothing is written then).
    """
    writable_dir(folder, field)
    if not lock:
        yield
        return
    path = os.path.join(folder, LOCK_NAME)
    fd = _acquire(path, folder, field)
    try:
        _write_holder(fd, path)
        yield
    finally:
        with contextlib.suppress(OSError):  # removed while locked: no other run can take it
            os.unlink(path)
        os.close(fd)


def _acquire(path, folder, field):
    """An open descriptor of the lock file `path`, locked by this process."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise WriteError(path, exc.strerror or str(exc)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = holder_of(fd)
            os.close(fd)
            raise SettingError(f"{{{field}}} {shown(folder)}: in use by another training run "
                               f"({holder}); wait for it to end, or give another {{{field}}}",
                               field, path=folder) from None
        except OSError as exc:  # a file system without locks
            os.close(fd)
            raise WriteError(path, f"cannot lock ({exc.strerror or exc})") from None
        # The last holder may have removed the file between our open and our lock: then
        # the lock is on a file nobody else sees, and the run must lock the new one.
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        mine = os.fstat(fd)
        if current is not None and (current.st_ino, current.st_dev) == (mine.st_ino, mine.st_dev):
            return fd
        os.close(fd)


def _write_holder(fd, path):
    """Writes this process's id, host and start time into the locked file."""
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    text = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": started})
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, text.encode() + b"\n", 0)
    except OSError as exc:
        raise WriteError(path, exc.strerror or str(exc)) from None


def holder_of(fd):
    """Who holds the lock, as the lock file `fd` says: 'process 123 on host, started ...'."""
    try:
        data = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        pid, host, started = data["pid"], data["host"], data["started"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return "a process that has not said who it is yet"
    return f"process {shown(pid)} on {shown(host)}, started {shown(started)}"
