"""Named regression cases of the fuzzer: checkpoints and .npz files that used to abort the
process (SIGABRT inside TensorFlow), raise a traceback or stall, each refused with one
`BadFileError` naming the file and the tensor or member."""

import io
import os
import re
import shutil
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from tensorflow.core.protobuf import tensor_bundle_pb2
from tensorflow.core.util import saved_tensor_slice_pb2

import fuzz_files as ff
from conftest import ROOT
from deeplab_resnet.weights import checkpoint
from deeplab_resnet.weights import npz_file
from deeplab_resnet.weights import tf_bundle
from deeplab_resnet.errors import BadFileError

KEY = "params/conv1.Sweights/.ATTRIBUTES/VARIABLE_VALUE"
PARAMS = {"conv1/weights": np.arange(24, dtype=np.float32).reshape(2, 3, 4),
          "conv1/biases": np.ones(4, np.float32)}


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A small checkpoint of ours (plain, and one recording a variant, whose string tensor
    `meta/model` some cases edit) and a V1 file as the 2017 port wrote them."""
    from test_weights_files import write_port_checkpoint
    root = tmp_path_factory.mktemp("good")
    prefix = checkpoint.save_params(PARAMS, root / "ckpt" / "model")
    with_meta = checkpoint.save_params(PARAMS, root / "ckpt_meta" / "model", "tiny", 3)
    v1 = write_port_checkpoint(PARAMS, root / "port.ckpt", version=1)
    return {"v2": prefix, "v2_meta": with_meta, "v1": v1}


def edited(good, tmp_path, edit, key=KEY, source="v2"):
    """A copy of the good checkpoint `source` whose entry `key` is changed by `edit(entry
    proto or bytes)`, the table rewritten with valid checksums; returns its prefix."""
    shutil.copytree(os.path.dirname(good[source]), tmp_path / "ckpt")
    prefix = str(tmp_path / "ckpt" / "model")
    entries = tf_bundle.table_entries(open(prefix + ".index", "rb").read())
    for i, (name, value) in enumerate(entries):
        if name == key.encode():
            message = (tensor_bundle_pb2.BundleHeaderProto if key == "" else
                       tensor_bundle_pb2.BundleEntryProto).FromString(value)
            result = edit(message)
            entries[i] = (name, result if isinstance(result, bytes)
                          else message.SerializeToString())
    with open(prefix + ".index", "wb") as file:
        file.write(ff.write_table(entries))
    return prefix


def refusal(prefix):
    with pytest.raises(BadFileError) as info:
        tf_bundle.check(prefix)
    assert info.value.path == str(prefix)
    assert str(info.value).startswith(f"{prefix}: corrupt or truncated checkpoint (")
    assert "\n" not in str(info.value)
    return str(info.value)


def test_good_checkpoints_pass(good):
    tf_bundle.check(good["v2"])
    tf_bundle.check(good["v1"])
    assert sorted(checkpoint.read_params(good["v2"])) == sorted(PARAMS)


def test_training_snapshot_with_optimizer_state_passes(tmp_path):
    import tensorflow as tf
    variable = tf.Variable(np.ones((3, 2), np.float32))
    optimizer = tf.keras.optimizers.SGD(0.1, momentum=0.9)
    optimizer.apply_gradients([(tf.ones((3, 2)), variable)])
    prefix = tf.train.Checkpoint(v=variable, optimizer=optimizer,
                                 step=tf.Variable(3, dtype=tf.int64)).write(str(tmp_path / "s"))
    tf_bundle.check(prefix)


# ---- entries that made TensorFlow abort the process ----

def test_entry_that_does_not_parse(good, tmp_path):
    """Was SIGABRT: `Check failed: entry.ParseFromString(...)` in checkpoint_reader.cc."""
    prefix = edited(good, tmp_path, lambda entry: b"\x0a\xff\xff")
    assert f"entry '{KEY}' does not parse" in refusal(prefix)


def test_shape_whose_element_count_overflows(good, tmp_path):
    """Was SIGABRT: `Check failed: 0 <= new_num_elements` for a shape of [2^62, 2^62]."""
    def edit(entry):
        del entry.shape.dim[:]
        entry.shape.dim.add(size=2 ** 62)
        entry.shape.dim.add(size=2 ** 62)
    assert "too many elements" in refusal(edited(good, tmp_path, edit))


def test_unset_dtype(good, tmp_path):
    """Was SIGABRT `Type not set` (tensor.cc), or a TypeError from
    get_variable_to_dtype_map on resume."""
    prefix = edited(good, tmp_path, lambda entry: setattr(entry, "dtype", 0))
    assert f"tensor '{KEY}' has unsupported dtype 0 (unset)" in refusal(prefix)


@pytest.mark.parametrize("dtype", [20, 21, 101, 12345])
def test_unsupported_dtype(good, tmp_path, dtype):
    """Was SIGABRT `Unexpected type` (tensor.cc, from GetTensor) for DT_FLOAT_REF (101)."""
    prefix = edited(good, tmp_path, lambda entry: setattr(entry, "dtype", dtype))
    assert f"unsupported dtype {dtype}" in refusal(prefix)


def test_formerly_aborting_checkpoints_give_one_line_from_the_command(good, tmp_path):
    """Through inference.py in a child process (the process's fate is under test)."""
    image = tmp_path / "a.png"
    from PIL import Image
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(image)
    for name, edit in [("parse", lambda entry: b"\x0a\xff\xff"),
                       ("dtype", lambda entry: setattr(entry, "dtype", 101))]:
        prefix = edited(good, tmp_path / name, edit)
        result = subprocess.run(
            [sys.executable, str(ROOT / "inference.py"), str(image), prefix, "--save-dir",
             str(tmp_path / name / "out")], capture_output=True, text=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, result.stderr
        assert len(lines) == 1 and lines[0].startswith(f"error: {prefix}: corrupt"), lines
        assert not [p for p in (tmp_path / name).rglob("out/*") if p.is_file()]


# ---- claims beyond the files ----

def test_tensor_claiming_2_40_elements_is_refused_from_the_header(good, tmp_path):
    """Was a ~10 s stall before TensorFlow found the data missing."""
    def edit(entry):
        del entry.shape.dim[:]
        entry.shape.dim.add(size=2 ** 40)
        entry.size = 4 * 2 ** 40
    prefix = edited(good, tmp_path, edit)
    data_size = os.path.getsize(prefix + ".data-00000-of-00001")
    assert re.search(rf"claims bytes \d+\.\.\d{{13}} of a {data_size}-byte data file",
                     refusal(prefix))


def test_negative_dimension(good, tmp_path):
    prefix = edited(good, tmp_path, lambda entry: entry.shape.dim.add(size=-3))
    assert "invalid shape" in refusal(prefix)


def test_size_inconsistent_with_shape(good, tmp_path):
    prefix = edited(good, tmp_path, lambda entry: setattr(entry, "size", entry.size - 4))
    assert "of shape [2, 3, 4] needs 96 bytes, its entry says 92" in refusal(prefix)


def test_bytes_beyond_the_data_file(good, tmp_path):
    prefix = edited(good, tmp_path, lambda entry: setattr(entry, "offset", 10 ** 6))
    assert "claims bytes 1000000..1000096" in refusal(prefix)


def test_truncated_data_file(good, tmp_path):
    prefix = edited(good, tmp_path, lambda entry: None)
    data = prefix + ".data-00000-of-00001"
    with open(data, "r+b") as file:
        file.truncate(os.path.getsize(data) // 2)
    assert "-byte data file" in refusal(prefix)


def test_shard_out_of_range_and_missing_shard(good, tmp_path):
    prefix = edited(good, tmp_path / "a", lambda entry: setattr(entry, "shard_id", 1))
    assert "is in data file 1 of 1" in refusal(prefix)
    prefix = edited(good, tmp_path / "b", lambda header: setattr(header, "num_shards", 2),
                    key="")
    assert "data file model.data-00000-of-00002 is missing" in refusal(prefix)
    prefix = edited(good, tmp_path / "c", lambda header: setattr(header, "num_shards", 0),
                    key="")
    assert "the header claims 0 data files" in refusal(prefix)


def test_sliced_tensor(good, tmp_path):
    prefix = edited(good, tmp_path, lambda entry: entry.slices.add().extent.add(length=1))
    assert "slice of a partitioned variable" in refusal(prefix)


def test_string_lengths_beyond_the_tensor(good, tmp_path):
    key = "meta/model/.ATTRIBUTES/VARIABLE_VALUE"
    prefix = edited(good, tmp_path, lambda entry: None, key=key, source="v2_meta")
    entry = tensor_bundle_pb2.BundleEntryProto.FromString(dict(tf_bundle.table_entries(
        open(prefix + ".index", "rb").read()))[key.encode()])
    with open(prefix + ".data-00000-of-00001", "r+b") as file:
        file.seek(entry.offset)
        file.write(b"\xff\xff\xff\xff\x0f")  # a length varint of 2^32 - 1
    assert f"tensor '{key}' claims strings of 4294967295 bytes" in refusal(prefix)


# ---- the table itself ----

def test_table_structure(good, tmp_path):
    prefix = edited(good, tmp_path, lambda entry: None)
    data = open(prefix + ".index", "rb").read()
    entries = tf_bundle.table_entries(data)
    cases = {
        "no table magic": data[:-1] + b"\0",
        "keys out of order": ff.write_table(entries[:1] + entries[1:][::-1]),
        "no header entry": ff.write_table(entries[1:]),
        "shorter than a table's footer": data[:20],
    }
    # A restart point moved into the middle of an entry (checksums fixed).
    offset, size = tf_bundle.block_handles(data)[1]
    index = tf_bundle.block_entries(data[offset: offset + size])
    block_offset, block_size = tf_bundle._block_handle(index[0][1], 0, len(index[0][1]))[0]
    block = bytearray(data[block_offset: block_offset + block_size])
    struct.pack_into("<I", block, len(block) - 8, 3)
    trailer = b"\0" + struct.pack("<I", ff.masked_crc32c(bytes(block) + b"\0"))
    cases["restart points are not on its entries"] = (
        data[:block_offset] + bytes(block) + trailer + data[block_offset + block_size + 5:])
    for expected, content in cases.items():
        with open(prefix + ".index", "wb") as file:
            file.write(content)
        assert expected in refusal(prefix)


# ---- V1 files (the 2017 port's) ----

def v1_edited(good, tmp_path, edit):
    data = open(good["v1"], "rb").read()
    entries = tf_bundle.table_entries(data)
    header = saved_tensor_slice_pb2.SavedTensorSlices.FromString(entries[0][1])
    edit(header.meta.tensor[0])
    entries[0] = (b"", header.SerializeToString())
    path = tmp_path / "port.ckpt"
    path.write_bytes(ff.write_table(entries))
    return str(path)


def test_v1_unset_dtype(good, tmp_path):
    """Gave a TypeError from get_variable_to_dtype_map."""
    assert "unsupported dtype 0" in refusal(v1_edited(good, tmp_path,
                                                      lambda t: setattr(t, "type", 0)))


def test_v1_more_values_than_bytes(good, tmp_path):
    def edit(tensor):
        tensor.shape.dim[0].size = 2 ** 40
    assert "more values than the file has bytes" in refusal(v1_edited(good, tmp_path, edit))


# ---- .npz ----

def npz_with(tmp_path, members):
    """An .npz holding [(member name, bytes)] as given."""
    path = tmp_path / "w.npz"
    with zipfile.ZipFile(path, "w") as archive:
        for name, payload in members:
            archive.writestr(name, payload)
    return path


def npy(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def npz_refusal(path, expected):
    with pytest.raises(BadFileError) as info:
        npz_file.read(path)
    assert info.value.path == str(path) and expected in str(info.value), str(info.value)
    assert str(info.value).startswith(f"{path}: ")


def test_npz_reads_what_numpy_wrote(tmp_path):
    path = tmp_path / "w.npz"
    np.savez_compressed(path, **PARAMS, fortran=np.asfortranarray(np.eye(3, 4)))
    arrays = npz_file.read(path)
    assert sorted(arrays) == ["conv1/biases", "conv1/weights", "fortran"]
    np.testing.assert_array_equal(arrays["conv1/weights"], PARAMS["conv1/weights"])
    np.testing.assert_array_equal(arrays["fortran"], np.eye(3, 4))


def test_npz_member_that_is_not_npy(tmp_path):
    """Was `AttributeError: 'bytes' object has no attribute 'shape'`."""
    npz_refusal(npz_with(tmp_path, [("a.npy", npy(np.ones(2))), ("notes.txt", b"hi")]),
                "member 'notes.txt' is not an .npy array")


def test_npz_duplicated_member(tmp_path):
    with pytest.warns(UserWarning):
        path = npz_with(tmp_path, [("a.npy", npy(np.ones(2))), ("a.npy", npy(np.ones(3)))])
    npz_refusal(path, "member 'a.npy' appears twice")


def test_npy_header_with_a_wrong_length(tmp_path):
    """Was `tokenize.TokenError` escaping numpy's header parser."""
    payload = npy(np.ones(2))
    payload = payload[:8] + struct.pack("<H", 20) + payload[10:]
    npz_refusal(npz_with(tmp_path, [("a.npy", payload)]), "header is not a Python literal")


def test_npy_object_dtype(tmp_path):
    header = b"{'descr': '|O', 'fortran_order': False, 'shape': (2,), }"
    payload = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + b"\0" * 16
    npz_refusal(npz_with(tmp_path, [("a.npy", payload)]), "dtype |O is not a number type")


def test_npy_shape_beyond_its_bytes(tmp_path):
    payload = npy(np.ones(2, np.float32)).replace(b"(2,)", b"(1099511627776,)")
    npz_refusal(npz_with(tmp_path, [("a.npy", payload)]),
                "shape (1099511627776,) of float32 needs 4398046511104 bytes")


def test_npz_zip_bomb(tmp_path):
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a.npy", npy(np.zeros(80 * 2 ** 20 // 8)))
    npz_refusal(path, "(a zip bomb?)")


def test_npz_zip_bomb_of_many_small_members(tmp_path, monkeypatch):
    # Scaled down (a real one is slow to write): each member under the floor, all above.
    monkeypatch.setattr(npz_file, "BOMB_FLOOR", 2 ** 20)
    monkeypatch.setattr(npz_file, "MAX_EXPANSION", 100)
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for i in range(16):
            archive.writestr(f"a{i}.npy", npy(np.zeros(2 ** 19 // 8)))
    npz_refusal(path, f"{path}: expands from")


def test_npz_that_is_not_a_zip(tmp_path):
    path = tmp_path / "w.npz"
    path.write_bytes(b"PK\x03\x04 not really")
    npz_refusal(path, "not a readable .npz of weights")


def test_restore_failures_keep_only_tensorflow_s_reason():
    """TensorFlow wraps an op's failure in `{{function_node __wrapped__RestoreV2...}}` and
    `[Op:RestoreV2]`: the one-line error keeps what is between."""
    import tensorflow as tf
    exc = tf.errors.DataLossError(
        None, None, "{{function_node __wrapped__RestoreV2_dtypes_1_device_/job:localhost/"
        "replica:0/task:0/device:CPU:0}} Checksum does not match: stored 1 vs. calculated on "
        "the restored bytes 2 [Op:RestoreV2]\nmore detail")
    assert str(checkpoint.corrupt("snap/model.ckpt-3", exc)) == (
        "snap/model.ckpt-3: corrupt or truncated checkpoint (Checksum does not match: stored 1 "
        "vs. calculated on the restored bytes 2)")
