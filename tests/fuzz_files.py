"""Seeded mutations of every kind of file the commands read, for tests/test_fuzz.py and
tests/fuzz_campaign.py.

Each mutator takes (bytes, numpy Generator) and returns the mutated bytes and a short
description. Blind mutations (bit flips, truncation, byte runs) exercise the outer
checks (checksums, magic numbers, parsers); the table mutators rewrite a TensorFlow
table (`.index`, V1 `.ckpt`) with valid block checksums, so the entries themselves reach
the reader, as a file corrupted before it was checksummed would.
"""

import io
import re
import struct
import warnings
import zipfile

import numpy as np

from deeplab_resnet.weights import tf_bundle

# ---- crc32c (Castagnoli), masked as LevelDB tables store it ----

def _crc_table():
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _crc_table()


def crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data):
    crc = crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


# ---- writing a table (one data block) ----

def _varint(value):
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _block(entries, restart_interval=16):
    out, restarts, previous = bytearray(), [], b""
    for i, (key, value) in enumerate(entries):
        shared = 0
        if i % restart_interval:
            while (shared < min(len(key), len(previous))
                   and key[shared] == previous[shared]):
                shared += 1
        else:
            restarts.append(len(out))
        out += _varint(shared) + _varint(len(key) - shared) + _varint(len(value))
        out += key[shared:] + value
        previous = key
    restarts = restarts or [0]
    out += struct.pack(f"<{len(restarts)}I", *restarts) + struct.pack("<I", len(restarts))
    return bytes(out)


def _with_trailer(block):
    return block + b"\0" + struct.pack("<I", masked_crc32c(block + b"\0"))


def write_table(entries):
    """The bytes of a table holding [(key, value)] as given (in that order), checksums valid."""
    data = _block(entries)
    metaindex = _block([])
    out = _with_trailer(data)
    metaindex_handle = (len(out), len(metaindex))
    out += _with_trailer(metaindex)
    last_key = entries[-1][0] if entries else b""
    index = _block([(last_key + b"\xff", _varint(0) + _varint(len(data)))])
    index_handle = (len(out), len(index))
    out += _with_trailer(index)
    footer = b"".join(_varint(v) for v in metaindex_handle + index_handle)
    footer = footer.ljust(40, b"\0") + struct.pack("<Q", tf_bundle.TABLE_MAGIC)
    return out + footer


# ---- mutators ----

def bit_flips(data, rng):
    data = bytearray(data)
    count = int(rng.integers(1, 9))
    for pos in rng.integers(0, len(data), count):
        data[pos] ^= 1 << int(rng.integers(0, 8))
    return bytes(data), f"{count} bit flips"


def truncation(data, rng):
    size = int(rng.integers(0, len(data)))
    return data[:size], f"truncated to {size} of {len(data)} bytes"


def byte_run(data, rng):
    start = int(rng.integers(0, len(data)))
    size = int(rng.integers(1, 65))
    fill = bytes([int(rng.choice([0, 0xFF, 0x7F, 0x80, int(rng.integers(0, 256))]))]) * size
    return data[:start] + fill + data[start + size:], f"{size} bytes at {start} set to {fill[:1]!r}"


def appended(data, rng):
    extra = rng.integers(0, 256, int(rng.integers(1, 200)), dtype=np.uint8).tobytes()
    return data + extra, f"{len(extra)} bytes appended"


# What a failed download, an unfetched Git LFS file or a lost write leaves in a file's place.
REPLACEMENTS = {
    "html": b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>\n"
            b"<body><h1>Not Found</h1></body></html>\n",
    "text": b"Access denied: please sign in to download this file.\n",
    "lfs": b"version https://git-lfs.github.com/spec/v1\noid sha256:0123abcd\nsize 1234\n",
    "nul": b"\0" * 4096,
}
# What each replacement is called in the error line (issue 26 item 5).
REPLACED_AS = {"html": "an HTML page", "text": "a text file", "lfs": "a Git LFS pointer",
               "nul": "a file of NUL bytes"}


def replaced(data, rng):
    """The whole file replaced by one of `REPLACEMENTS`."""
    name = sorted(REPLACEMENTS)[int(rng.integers(0, len(REPLACEMENTS)))]
    return REPLACEMENTS[name], f"replaced by {name} ({len(REPLACEMENTS[name])} bytes)"


BLIND = (bit_flips, truncation, byte_run, appended, replaced)

_EXTREMES = (0, 1, 2, 3, 127, 128, 255, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, 2 ** 40, 2 ** 62,
             2 ** 63 - 1, -1, -2 ** 62, -2 ** 63)


def extreme(rng):
    return int(rng.choice(_EXTREMES))


def _entry_mutation(entries, rng, mutate_value):
    """Applies `mutate_value(key, value, rng) -> (value, what)` to one entry of a table."""
    index = int(rng.integers(0, len(entries)))
    key, value = entries[index]
    new_value, what = mutate_value(key, value, rng)
    entries = list(entries)
    entries[index] = (key, new_value)
    return write_table(entries), f"entry {key[:40]!r}: {what}"


def _raw_value(key, value, rng):
    mutated, what = rng.choice([bit_flips, byte_run, truncation])(value or b"\0", rng)
    return mutated, what


def _bundle_value(key, value, rng):
    """A BundleEntryProto / BundleHeaderProto with one field set to an extreme value."""
    from tensorflow.core.protobuf import tensor_bundle_pb2
    if key == b"":
        header = tensor_bundle_pb2.BundleHeaderProto.FromString(value)
        field = str(rng.choice(["num_shards", "endianness", "version"]))
        if field == "version":
            header.version.producer = extreme(rng) % 2 ** 31
            header.version.min_consumer = extreme(rng) % 2 ** 31
        elif field == "endianness":
            header.endianness = int(rng.integers(0, 3))
        else:
            header.num_shards = extreme(rng) % 2 ** 31 - int(rng.integers(0, 2)) * 2 ** 31
        return header.SerializeToString(), f"header {field}"
    entry = tensor_bundle_pb2.BundleEntryProto.FromString(value)
    field = str(rng.choice(["dtype", "shape", "dims", "shard_id", "offset", "size", "slices",
                            "crc32c", "size_and_shape"]))
    if field == "dtype":
        entry.dtype = int(rng.choice([0, 1, 2, 3, 7, 9, 10, 11, 14, 19, 20, 21, 24, 29, 33, 99,
                                      101, 2 ** 31 - 1]))
    elif field == "shape":
        dim = entry.shape.dim.add() if not entry.shape.dim or rng.random() < 0.3 else \
            entry.shape.dim[int(rng.integers(0, len(entry.shape.dim)))]
        dim.size = extreme(rng)
    elif field == "dims":
        del entry.shape.dim[:]
        for _ in range(int(rng.choice([1, 2, 3, 255, 300]))):
            entry.shape.dim.add().size = int(rng.choice([2 ** 62, 2 ** 31, 0, 1, 3]))
        entry.shape.unknown_rank = bool(rng.random() < 0.1)
    elif field == "size_and_shape":  # a consistent claim far beyond the data file
        del entry.shape.dim[:]
        entry.shape.dim.add().size = 2 ** 40
        entry.size = 2 ** 42
    elif field == "slices":
        entry.slices.add().extent.add(start=0, length=1)
    else:
        setattr(entry, field, extreme(rng) % 2 ** 32 if field == "crc32c" else
                extreme(rng) % 2 ** 31 if field == "shard_id" else extreme(rng))
    return entry.SerializeToString(), field


def table_raw_entry(data, rng):
    """Garbage inside one entry's value, the table's checksums valid."""
    return _entry_mutation(tf_bundle.table_entries(data), rng, _raw_value)


def bundle_entry_field(data, rng):
    """One field of one V2 index entry set to an extreme value, checksums valid."""
    return _entry_mutation(tf_bundle.table_entries(data), rng, _bundle_value)


def table_keys(data, rng):
    """Keys dropped, duplicated, swapped or renamed; checksums valid."""
    entries = tf_bundle.table_entries(data)
    i, j = (int(x) for x in rng.integers(0, len(entries), 2))
    how = str(rng.choice(["drop", "duplicate", "swap", "rename"]))
    if how == "drop":
        del entries[i]
    elif how == "duplicate":
        entries.insert(i, entries[i])
    elif how == "swap":
        entries[i], entries[j] = entries[j], entries[i]
    else:
        entries[i] = (entries[i][0][:-1] + b"x", entries[i][1])
    return write_table(entries), f"{how} entries {i}, {j}"


def _saved_slices_value(key, value, rng):
    """A V1 SavedTensorSlices (meta or data) with one field set to an extreme value."""
    from tensorflow.core.util import saved_tensor_slice_pb2
    slices = saved_tensor_slice_pb2.SavedTensorSlices.FromString(value)
    if key == b"" and slices.meta.tensor:
        tensor = slices.meta.tensor[int(rng.integers(0, len(slices.meta.tensor)))]
        field = str(rng.choice(["type", "dim", "extent", "add_dim"]))
        if field == "type":
            tensor.type = int(rng.choice([0, 7, 11, 20, 21, 99, 101]))
        elif field == "dim" and tensor.shape.dim:
            tensor.shape.dim[int(rng.integers(0, len(tensor.shape.dim)))].size = extreme(rng)
        elif field == "extent" and tensor.slice and tensor.slice[0].extent:
            tensor.slice[0].extent[0].start = extreme(rng)
            tensor.slice[0].extent[0].length = extreme(rng)
        else:
            tensor.shape.dim.add().size = extreme(rng)
        return slices.SerializeToString(), f"meta {field}"
    data = slices.data.data
    field = str(rng.choice(["dtype", "dim", "values", "extent"]))
    if field == "dtype":
        data.dtype = int(rng.choice([0, 2, 3, 7, 20, 21, 99]))
    elif field == "dim":
        data.tensor_shape.dim.add().size = extreme(rng)
    elif field == "values":
        del data.float_val[int(rng.integers(0, len(data.float_val) + 1)):]
    elif slices.data.slice.extent:
        slices.data.slice.extent[0].length = extreme(rng)
    return slices.SerializeToString(), f"data {field}"


def v1_entry_field(data, rng):
    """One field of one V1 checkpoint entry set to an extreme value, checksums valid."""
    return _entry_mutation(tf_bundle.table_entries(data), rng, _saved_slices_value)


def _npz_members(data):
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return [(info, archive.read(info)) for info in archive.infolist()]


def _npz(members):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names
        for name, payload, compress in members:
            archive.writestr(zipfile.ZipInfo(name), payload, compress_type=compress)
    return buffer.getvalue()


def npz_structure(data, rng):
    """A member renamed, duplicated, replaced or given a lying `.npy` header (valid zip)."""
    members = [(info.filename, payload, zipfile.ZIP_STORED)
               for info, payload in _npz_members(data)]
    i = int(rng.integers(0, len(members)))
    name, payload, compress = members[i]
    header_end = payload.index(b"\n") + 1
    how = str(rng.choice(["not_npy", "duplicate", "raw_bytes", "header_length", "object",
                          "shape", "huge_shape", "descr", "bomb", "header_text", "empty_name"]))
    if how == "not_npy":
        members[i] = (name[:-4] + ".txt", payload, compress)
    elif how == "duplicate":
        members.insert(i, members[i])
    elif how == "raw_bytes":
        members[i] = (name, b"not an array", compress)
    elif how == "header_length":
        payload = payload[:8] + struct.pack("<H", int(rng.integers(0, 2 ** 16))) + payload[10:]
        members[i] = (name, payload, compress)
    elif how == "empty_name":
        members[i] = (".npy", payload, compress)
    elif how == "bomb":
        members[i] = (name, payload[:header_end] + bytes(200 * 2 ** 20), zipfile.ZIP_DEFLATED)
    else:
        header = payload[10:header_end].decode("latin-1")
        header = {
            "object": lambda h: h.replace(h[h.index("'descr'"):h.index(",")], "'descr': '|O'"),
            "shape": lambda h: h.replace("'shape': (", "'shape': (2, "),
            "huge_shape": lambda h: h.replace("'shape': (", "'shape': (1099511627776, "),
            "descr": lambda h: h.replace("'descr': '", "'descr': 'V"),
            "header_text": lambda h: h.replace("{", "{(", 1),
        }[how](header)
        header = header.encode("latin-1")
        members[i] = (name, payload[:8] + struct.pack("<H", len(header)) + header
                      + payload[header_end:], compress)
    return _npz(members), f"member {name}: {how}"


def text_tokens(data, rng):
    """A number of a text file (prototxt, list, state file) replaced by an extreme one, or a
    line duplicated, dropped or cut."""
    text = data.decode("utf-8", "replace")
    numbers = [m.span() for m in re.finditer(r"-?\d+(\.\d+)?", text)]
    lines = text.splitlines(keepends=True)
    how = str(rng.choice(["number", "duplicate_line", "drop_line", "cut_line"]))
    if how == "number" and numbers:
        start, end = numbers[int(rng.integers(0, len(numbers)))]
        value = str(rng.choice(["0", "-1", "2147483648", "1e308", "nan", "99999999999999999999",
                                str(extreme(rng))]))
        return (text[:start] + value + text[end:]).encode(), f"number at {start} -> {value}"
    i = int(rng.integers(0, len(lines)))
    if how == "duplicate_line":
        lines.insert(i, lines[i])
    elif how == "drop_line":
        del lines[i]
    else:
        lines[i] = lines[i][: int(rng.integers(0, len(lines[i]) + 1))]
    return "".join(lines).encode(), f"{how} {i}"
