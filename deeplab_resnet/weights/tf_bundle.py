"""Checks a TensorFlow checkpoint before TensorFlow's own reader opens it.

TensorFlow's C++ reader trusts the entries of a checkpoint's `.index` once the
table's block checksums match: an entry that does not parse, a shape whose
element count overflows ([2^62, 2^62]) or an unset dtype stops the whole
process (SIGABRT, `Check failed: ...`), which no Python code can catch, and a
tensor claiming 2^40 elements is allocated before its data is found missing.
`check(prefix)` reads the index itself and refuses, as a `BadFileError` naming
the tensor, everything TensorFlow would trust to that point:

- the table (a LevelDB-style sorted table: a 48-byte footer holding the index
  block's handle and a magic number; blocks of prefix-compressed keys with a
  restart array and a 5-byte trailer), each block within the file, uncompressed,
  its keys in order and its restart points on entry boundaries;
- the header entry (key ""): a `BundleHeaderProto` with at least one shard;
- every other entry, a `BundleEntryProto`: a numeric, boolean or string dtype,
  a shape of at most 254 non-negative dimensions, no slices, a shard that
  exists, and a byte range inside that shard's `.data` file whose size is the
  element count times the dtype's size (for strings: the lengths recorded in
  the data add up within it).

What stays TensorFlow's job, because it fails cleanly: the block checksums
(TensorFlow verifies every block it reads) and the data checksums (`DataLoss`).

The 2017 port's V1 checkpoints (one file, no `.index`: the same table, holding
`SavedTensorSlices`) are read by TensorFlow's V1 reader, which a fuzzing
campaign found returns errors rather than aborting; `check` refuses their
unreadable tables and the dtypes, negative dimensions and element counts
beyond the file's size that the V1 reader would pass on.
"""

import functools
import math
import os
import struct

from google.protobuf.message import DecodeError
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import tensor_bundle_pb2
from tensorflow.core.util import saved_tensor_slice_pb2

from deeplab_resnet.errors import BadFileError, shown
from deeplab_resnet.files import not_a

FOOTER_SIZE = 48
TABLE_MAGIC = 0xDB4775248B80FB57
BLOCK_TRAILER_SIZE = 5  # compression type (1 byte) + masked crc32c (4 bytes)
MAX_DIMS = 254  # TensorFlow's TensorShape limit
# Bytes per element of the dtypes a checkpoint of ours can hold (None: strings, variable).
ITEM_SIZES = {
    types_pb2.DT_FLOAT: 4, types_pb2.DT_DOUBLE: 8, types_pb2.DT_HALF: 2,
    types_pb2.DT_BFLOAT16: 2, types_pb2.DT_INT8: 1, types_pb2.DT_INT16: 2,
    types_pb2.DT_INT32: 4, types_pb2.DT_INT64: 8, types_pb2.DT_UINT8: 1,
    types_pb2.DT_UINT16: 2, types_pb2.DT_UINT32: 4, types_pb2.DT_UINT64: 8,
    types_pb2.DT_BOOL: 1, types_pb2.DT_COMPLEX64: 8, types_pb2.DT_COMPLEX128: 16,
    types_pb2.DT_STRING: None,
}


class CorruptTable(ValueError):
    """The table structure of an index is broken (the message says where)."""


def _varint(data, pos, end):
    """(value, next position) of the base-128 varint at `pos`, at most 10 bytes before `end`."""
    value = shift = 0
    while shift <= 63:
        if pos >= end:
            raise CorruptTable("varint runs past its block")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise CorruptTable("varint longer than 10 bytes")


def _block_handle(data, pos, end):
    offset, pos = _varint(data, pos, end)
    size, pos = _varint(data, pos, end)
    return (offset, size), pos


def block_handles(data):
    """(metaindex, index) block handles `(offset, size)` from a table's footer."""
    if len(data) < FOOTER_SIZE:
        raise CorruptTable(f"{len(data)} bytes, shorter than a table's footer")
    footer = len(data) - FOOTER_SIZE
    if struct.unpack_from("<Q", data, len(data) - 8)[0] != TABLE_MAGIC:
        raise CorruptTable("no table magic number at its end")
    metaindex, pos = _block_handle(data, footer, len(data) - 8)
    index, _ = _block_handle(data, pos, len(data) - 8)
    return metaindex, index


def _block(data, handle):
    """The contents of the block at `handle`, checked to lie before the footer, uncompressed."""
    offset, size = handle
    if offset + size + BLOCK_TRAILER_SIZE > len(data) - FOOTER_SIZE:
        raise CorruptTable(f"block at {offset} (+{size} bytes) beyond the end of the table")
    if data[offset + size] != 0:
        raise CorruptTable(f"block at {offset} compressed (type {data[offset + size]}): "
                           "not written by TensorFlow's checkpoint writer")
    return data[offset: offset + size]


def block_entries(block):
    """[(key, value)] of one block, every prefix-compressed key decoded in order.

    The restart points (where TensorFlow's binary search starts decoding)
    must fall on entries that share nothing with the key before, so that
    every key TensorFlow can decode is one decoded here.
    """
    if len(block) < 4:
        raise CorruptTable("block shorter than its restart count")
    num_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    if num_restarts > (len(block) - 4) // 4:
        raise CorruptTable(f"block of {len(block)} bytes claims {num_restarts} restart points")
    end = len(block) - 4 - 4 * num_restarts
    restarts = struct.unpack_from(f"<{num_restarts}I", block, end)
    entries, fresh_starts, key, pos = [], set(), b"", 0
    while pos < end:
        start = pos
        shared, pos = _varint(block, pos, end)
        unshared, pos = _varint(block, pos, end)
        value_size, pos = _varint(block, pos, end)
        if shared > len(key) or pos + unshared + value_size > end:
            raise CorruptTable(f"entry at {start} of a block runs past it")
        if shared == 0:
            fresh_starts.add(start)
        new_key = key[:shared] + block[pos: pos + unshared]
        if entries and new_key <= key:
            raise CorruptTable(f"keys out of order ({new_key[:60]!r} after {key[:60]!r})")
        key, pos = new_key, pos + unshared
        entries.append((key, block[pos: pos + value_size]))
        pos += value_size
    if not set(restarts) <= fresh_starts or list(restarts) != sorted(restarts):
        raise CorruptTable("a block's restart points are not on its entries")
    return entries


def table_entries(data):
    """[(key, value)] of a whole table (the bytes of an `.index` or a V1 checkpoint)."""
    _, index = block_handles(data)
    entries = []
    for _, handle_bytes in block_entries(_block(data, index)):
        handle, _ = _block_handle(handle_bytes, 0, len(handle_bytes))
        entries.extend(block_entries(_block(data, handle)))
    return entries


def data_path(prefix, shard, num_shards):
    """The `.data` file of one shard, named as TensorFlow names it."""
    return f"{prefix}.data-{shard:05d}-of-{num_shards:05d}"


def check(prefix):
    """Refuses a checkpoint at `prefix` that TensorFlow's reader would not survive.

    Args:
        prefix: a V2 checkpoint prefix (`PREFIX.index` and `PREFIX.data-*`), or
            a V1 checkpoint file (no `.index`).
    Raises:
        BadFileError(path=prefix), one line "PREFIX: corrupt or truncated
        checkpoint (...)" saying what is wrong (naming the tensor for an entry).

    Example:
        >>> check("snapshots/model.ckpt-2000")  # returns None, or raises BadFileError
    """
    prefix = str(prefix)
    if not os.path.exists(prefix + ".index") and os.path.isfile(prefix):
        _check_v1(prefix)
        return
    entries = _entries(prefix, prefix + ".index")
    header = _parse(tensor_bundle_pb2.BundleHeaderProto, entries[0][1], prefix, "")
    if header.num_shards < 1:
        raise _corrupt(prefix, f"the header claims {header.num_shards} data files")
    shard_sizes = functools.cache(functools.partial(_shard_size, prefix,
                                                    num_shards=header.num_shards))
    for key, value in entries[1:]:
        name = key.decode("utf-8", "replace")
        entry = _parse(tensor_bundle_pb2.BundleEntryProto, value, prefix, name)
        _check_entry(entry, prefix, name, header.num_shards, shard_sizes)


def _corrupt(prefix, detail):
    """The error for a checkpoint that cannot be read; one whose index (a V1 checkpoint: its
    one file) is plainly something else, an HTML page say, is called that."""
    index = prefix + ".index" if os.path.exists(prefix + ".index") else prefix
    return BadFileError(not_a(index, "a checkpoint")
                        or f"{prefix}: corrupt or truncated checkpoint ({shown(detail)})",
                        path=prefix)


def _entries(prefix, path):
    """[(key, value)] of the table at `path`, the first under the header key ""."""
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as exc:
        raise BadFileError(f"{path}: cannot read ({exc.strerror})", path=prefix) from None
    try:
        entries = table_entries(data)
    except CorruptTable as exc:
        raise _corrupt(prefix, f"{os.path.basename(path)}: {exc}") from None
    if not entries or entries[0][0] != b"":
        raise _corrupt(prefix, f"{os.path.basename(path)} has no header entry")
    return entries


def _check_v1(path):
    """Refuses a V1 checkpoint whose header lists a tensor the V1 reader should not build."""
    header = _parse(saved_tensor_slice_pb2.SavedTensorSlices, _entries(path, path)[0][1],
                    path, "")
    for tensor in header.meta.tensor:
        dims = [d.size for d in tensor.shape.dim]
        if tensor.type not in ITEM_SIZES:
            what = f"has unsupported dtype {tensor.type}"
        elif tensor.shape.unknown_rank or len(dims) > MAX_DIMS or any(d < 0 for d in dims):
            what = f"has an invalid shape {dims}"
        elif math.prod(dims) > os.path.getsize(path):  # every value takes a byte at least
            what = f"of shape {dims} has more values than the file has bytes"
        else:
            continue
        raise _corrupt(path, f"tensor '{tensor.name}' {what}")


def _parse(message_type, value, prefix, name):
    message = message_type()
    try:
        message.ParseFromString(value)
    except (DecodeError, RuntimeError, ValueError) as exc:
        what = f"entry '{name}'" if name else "the header"
        raise _corrupt(prefix, f"{what} does not parse: {exc}") from None
    return message


def _shard_size(prefix, shard, *, num_shards):
    path = data_path(prefix, shard, num_shards)
    try:
        return os.path.getsize(path)
    except OSError:
        raise _corrupt(prefix, f"data file {os.path.basename(path)} is missing") from None


def _check_entry(entry, prefix, name, num_shards, shard_sizes):
    """Refuses one tensor's entry (see `check`); `shard_sizes(shard)` is a shard's byte count."""
    def refuse(what):
        raise _corrupt(prefix, f"tensor '{name}' {what}")

    if entry.dtype not in ITEM_SIZES:
        refuse(f"has unsupported dtype {entry.dtype}"
               + (" (unset)" if entry.dtype == types_pb2.DT_INVALID else ""))
    if entry.slices:
        refuse("is a slice of a partitioned variable (not supported)")
    dims = [d.size for d in entry.shape.dim]
    if entry.shape.unknown_rank or len(dims) > MAX_DIMS or any(d < 0 for d in dims):
        refuse(f"has an invalid shape {'(unknown rank)' if entry.shape.unknown_rank else dims}")
    if not 0 <= entry.shard_id < num_shards:
        refuse(f"is in data file {entry.shard_id} of {num_shards}")
    shard_size = shard_sizes(entry.shard_id)
    if entry.offset < 0 or entry.size < 0 or entry.offset + entry.size > shard_size:
        refuse(f"claims bytes {entry.offset}..{entry.offset + entry.size} of a "
               f"{shard_size}-byte data file")
    # Only the nonzero dimensions' product can overflow TensorFlow's int64 count.
    if math.prod(d for d in dims if d) >= 2 ** 62:
        refuse(f"has shape {dims}: too many elements")
    numel = math.prod(dims)
    item_size = ITEM_SIZES[entry.dtype]
    if item_size is None:
        _check_strings(data_path(prefix, entry.shard_id, num_shards), entry, numel, refuse)
    elif numel * item_size != entry.size:
        refuse(f"of shape {dims} needs {numel * item_size} bytes, its entry says {entry.size}")


def _check_strings(path, entry, numel, refuse):
    """The varint lengths of a string tensor's elements must add up within its bytes."""
    if numel > entry.size:
        refuse(f"of {numel} strings claims only {entry.size} bytes")
    with open(path, "rb") as file:
        file.seek(entry.offset)
        data = file.read(min(entry.size, 10 * numel))
    pos = total = 0
    try:
        for _ in range(numel):
            length, pos = _varint(data, pos, len(data))
            total += length
    except CorruptTable:
        refuse("has unreadable string lengths")
    if total > entry.size:
        refuse(f"claims strings of {total} bytes in {entry.size}")
