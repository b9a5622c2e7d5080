"""Reading an `.npz` of weights without trusting it.

`numpy.load` unpacks any member (a member that is not `.npy` comes back as
bytes), lets duplicated names shadow each other, allocates what an `.npy`
header claims and lets a tokenizer error of a bad header escape. `read(path)`
checks, before allocating anything, every member of the archive:

- its name is `NAME.npy`, not repeated;
- its `.npy` header parses (magic, version 1-3, a dict of `descr`,
  `fortran_order` and `shape` only) and names a numeric or boolean dtype
  (never objects, so nothing is unpickled);
- the header's shape times the dtype's size is exactly what the member holds,
  and neither a member nor the whole archive expands more than `MAX_EXPANSION`
  times its compressed size beyond `BOMB_FLOOR` bytes (a zip bomb).

Every refusal is a `BadFileError` naming the file and the member.
"""

import ast
import struct
import zipfile
import zlib

import numpy as np

from deeplab_resnet.errors import BadFileError
from deeplab_resnet.files import not_a

NPY_MAGIC = b"\x93NUMPY"
MAX_HEADER_SIZE = 65536
MAX_EXPANSION = 1000  # deflated float weights shrink little; a run of zeros ~1000 times
BOMB_FLOOR = 64 * 2 ** 20
# What a damaged zip archive or deflate stream raises from zipfile.
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError,
               ValueError, struct.error, NotImplementedError, RuntimeError, OverflowError)


def read(path):
    """{name: array} of the `.npz` at `path`, every member checked (see the module's doc).

    Raises:
        BadFileError(path=path) naming the member at fault.

    Example:
        >>> weights = read("weights.npz")  # {"conv1/weights": array(...), ...}
    """
    path = str(path)
    try:
        archive = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise BadFileError(f"{path}: no such file", path=path) from None
    except IsADirectoryError:
        raise BadFileError(f"{path}: is a folder, not an .npz", path=path) from None
    except _ZIP_ERRORS as exc:
        raise BadFileError(not_a(path, "an .npz of weights")
                           or f"{path}: not a readable .npz of weights ({_reason(exc)})",
                           path=path) from None
    arrays = {}
    with archive:
        members = archive.infolist()
        expanded = _expansion(sum(m.file_size for m in members),
                              sum(m.compress_size for m in members))
        if expanded:
            raise BadFileError(f"{path}: {expanded}", path=path)
        for info in members:
            name = info.filename[: -len(".npy")]
            if not info.filename.endswith(".npy") or not name:
                raise BadFileError(f"{path}: member '{info.filename}' is not an .npy array",
                                   path=path)
            if name in arrays:
                raise BadFileError(f"{path}: member '{info.filename}' appears twice", path=path)
            try:
                arrays[name] = _read_member(archive, info)
            except _ZIP_ERRORS as exc:
                raise BadFileError(f"{path}: member '{info.filename}': {_reason(exc)}",
                                   path=path) from None
    return arrays


def _reason(exc):
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__


def _expansion(size, compressed):
    """What is wrong with `compressed` bytes expanding to `size` (None when nothing is)."""
    if size > BOMB_FLOOR and size > MAX_EXPANSION * compressed:
        return f"expands from {compressed} to {size} bytes (a zip bomb?)"
    return None


def _read_member(archive, info):
    """One member's array; a ValueError says what is wrong with it."""
    expanded = _expansion(info.file_size, info.compress_size)
    if expanded:
        raise ValueError(expanded)
    with archive.open(info) as member:
        dtype, fortran_order, shape, header_size = _read_header(member)
        count = 1
        for dim in shape:
            count *= dim
        size = count * dtype.itemsize
        if header_size + size != info.file_size:
            raise ValueError(f"shape {shape} of {dtype} needs {size} bytes, the member holds "
                             f"{info.file_size - header_size}")
        data = member.read(size)
        if len(data) != size:
            raise ValueError(f"ends after {len(data)} of {size} bytes")
    array = np.frombuffer(data, dtype=dtype, count=count)
    return array.reshape(shape, order="F" if fortran_order else "C")


def _read_header(member):
    """(dtype, fortran_order, shape, header size in bytes) of an `.npy` stream."""
    start = member.read(len(NPY_MAGIC) + 2)
    if len(start) < len(NPY_MAGIC) + 2 or not start.startswith(NPY_MAGIC):
        raise ValueError("not an .npy array (no magic number)")
    major = start[len(NPY_MAGIC)]
    if major not in (1, 2, 3):
        raise ValueError(f".npy format version {major} unknown")
    length_format = "<H" if major == 1 else "<I"
    length_bytes = member.read(struct.calcsize(length_format))
    if len(length_bytes) != struct.calcsize(length_format):
        raise ValueError("truncated .npy header")
    (length,) = struct.unpack(length_format, length_bytes)
    if length > MAX_HEADER_SIZE:
        raise ValueError(f".npy header of {length} bytes")
    text = member.read(length)
    if len(text) != length:
        raise ValueError("truncated .npy header")
    try:
        header = ast.literal_eval(text.decode("utf-8" if major == 3 else "latin-1"))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise ValueError(".npy header is not a Python literal") from None
    dtype, fortran_order, shape = _header_fields(header)
    return dtype, fortran_order, shape, len(start) + len(length_bytes) + length


def _header_fields(header):
    """(dtype, fortran_order, shape) of a parsed `.npy` header dict, checked."""
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise ValueError(".npy header is not {'descr', 'fortran_order', 'shape'}")
    shape = header["shape"]
    if (not isinstance(shape, tuple)
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                       for d in shape)):
        raise ValueError(f".npy header has shape {str(shape)[:60]}")
    if not isinstance(header["fortran_order"], bool):
        raise ValueError(".npy header's fortran_order is not a bool")
    try:
        dtype = np.dtype(header["descr"]) if isinstance(header["descr"], str) else None
    except (TypeError, ValueError, SyntaxError):
        dtype = None
    if dtype is None or dtype.kind not in "biufc" or dtype.fields is not None or dtype.shape:
        raise ValueError(f"dtype {str(header['descr'])[:40]} is not a number type")
    return dtype, header["fortran_order"], shape
