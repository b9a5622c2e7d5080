"""The fuzzing harness of tests/test_fuzz.py and tests/fuzz_campaign.py: a corpus of good
files, seeded cases (one mutated file through the command that reads it) and the contract
every case must keep.

A case passes when the command either succeeds with the expected output, or exits 2
(1 for a failed write) with exactly one stderr line, `error: ...` (printable: no raw bytes
echoed, at most `MAX_ERROR_LENGTH` characters), no traceback, and leaves no output file
behind.
"""

import contextlib
import dataclasses
import io
import os
import shutil

import numpy as np
from PIL import Image

import fuzz_files as ff
from deeplab_resnet.data.palette import save_label_png
from deeplab_resnet import cli
from deeplab_resnet.weights import caffe
from deeplab_resnet.weights import checkpoint
from deeplab_resnet.weights.caffe import write_caffemodel
from deeplab_resnet.cli import convert, evaluate, inference, train
from deeplab_resnet.model.network import DeepLabResNet

NUM_CLASSES = 3
TABLE = ff.BLIND + (ff.table_raw_entry, ff.table_keys)
# kind: (file of the corpus to mutate, its mutators)
KINDS = {
    "index": ("ckpt/tiny.index", TABLE + (ff.bundle_entry_field,) * 4),
    "data": ("ckpt/tiny.data-00000-of-00001", ff.BLIND),
    "snapshot_index": ("snap/model.ckpt-1.index", TABLE + (ff.bundle_entry_field,) * 4),
    "snapshot_state": ("snap/checkpoint", ff.BLIND + (ff.text_tokens,) * 2),
    "v1": ("port.ckpt", TABLE + (ff.v1_entry_field,) * 3),
    "npz": ("weights.npz", ff.BLIND + (ff.npz_structure,) * 4),
    "caffemodel": ("tiny.caffemodel", ff.BLIND),
    "prototxt": ("tiny.prototxt", ff.BLIND + (ff.text_tokens,) * 4),
    "image": ("data/img/0.jpg", ff.BLIND),
    "png_image": ("data/img/1.png", ff.BLIND),
    "label": ("data/lab/0.png", ff.BLIND),
    "list": ("data/list.txt", ff.BLIND + (ff.text_tokens,) * 2),
}
# Weights whose values are checksummed (V2 data, zip members): if accepted, they must be
# the good ones. A caffemodel or V1 file with other valid values is another model.
CHECKSUMMED = ("index", "data", "npz")
MAX_ERROR_LENGTH = 1200  # characters of an error line a person can still read
TRAIN_ARGS = ["--model", "tiny", "--num-classes", str(NUM_CLASSES), "--input-size", "33,33",
              "--batch-size", "1", "--num-steps", "1", "--save-pred-every", "1",
              "--save-num-images", "0"]


def run(main, argv):
    """(exit status, stdout, stderr) of a command run in-process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            cli.run(main, [str(a) for a in argv])
            code = 0
        except SystemExit as exc:
            code = cli.exit_status(exc)
    return code, out.getvalue(), err.getvalue()


def build_corpus(root):
    """The good files every case starts from, and the reference outputs; returns `root`."""
    from test_weights_files import write_port_checkpoint
    model = DeepLabResNet("tiny", NUM_CLASSES, seed=1)
    params = {k: v.numpy() for k, v in model.params.items()}
    checkpoint.save_params(params, root / "ckpt" / "tiny", "tiny", NUM_CLASSES)
    write_port_checkpoint(params, root / "port.ckpt", version=1)
    np.savez(root / "weights.npz", **params)
    (root / "tiny.prototxt").write_text(caffe.deploy_prototxt("tiny", NUM_CLASSES))
    write_caffemodel(root / "tiny.prototxt", params, root / "tiny.caffemodel")
    data = root / "data"
    (data / "img").mkdir(parents=True)
    (data / "lab").mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 44, 3), dtype=np.uint8)).save(data / "img/0.jpg")
    Image.fromarray(rng.integers(0, 255, (37, 29, 3), dtype=np.uint8)).save(data / "img/1.png")
    save_label_png(rng.integers(0, NUM_CLASSES, (40, 44)), data / "lab/0.png")
    (data / "list.txt").write_text("/img/0.jpg /lab/0.png\n")
    code, _, err = run(train.main, TRAIN_ARGS + ["--data-dir", data, "--data-list",
                                                 data / "list.txt", "--snapshot-dir",
                                                 root / "snap"])
    assert code == 0, err
    code, _, err = run(inference.main, [data / "img/0.jpg", root / "ckpt/tiny", "--save-dir",
                                        root / "reference"])
    assert code == 0, err
    return root


@dataclasses.dataclass
class Case:
    kind: str
    what: str  # the mutation, for the failure message
    folder: object  # pathlib.Path holding the case's copy of the corpus files it needs
    out: object  # where the command writes


def make_case(corpus, seed, index, folder):
    """Case `index` of the campaign seeded `seed`: a mutated copy of one corpus file."""
    rng = np.random.default_rng([seed, index])
    kind = list(KINDS)[int(rng.integers(0, len(KINDS)))]
    name, mutators = KINDS[kind]
    mutator = mutators[int(rng.integers(0, len(mutators)))]
    mutated, what = mutator((corpus / name).read_bytes(), rng)
    return _case(corpus, kind, mutated, f"{mutator.__name__}: {what}", folder)


def replaced_case(corpus, kind, replacement, folder):
    """The corpus file of `kind` replaced whole by `fuzz_files.REPLACEMENTS[replacement]`."""
    return _case(corpus, kind, ff.REPLACEMENTS[replacement], f"replaced by {replacement}",
                 folder)


def _case(corpus, kind, content, what, folder):
    """A case whose copy of the corpus file of `kind` holds `content`."""
    name = KINDS[kind][0]
    top = name.split("/")[0]
    source = corpus / top
    if source.is_dir():
        shutil.copytree(source, folder / top)
    else:
        for sibling in corpus.glob(top + "*"):  # a checkpoint's .index with its .data
            shutil.copy(sibling, folder / sibling.name)
    (folder / name).write_bytes(content)
    return Case(kind, f"{kind} {name}: {what}", folder, folder / "out")


def command(case, corpus):
    """(main, argv) of the command that reads the case's mutated file."""
    where = {k: case.folder / k if (case.folder / k).exists() else corpus / k
             for k in ("ckpt", "data", "snap", "port.ckpt", "weights.npz", "tiny.caffemodel",
                       "tiny.prototxt")}
    weights = {"v1": where["port.ckpt"], "npz": where["weights.npz"],
               "caffemodel": where["tiny.caffemodel"]}.get(case.kind, where["ckpt"] / "tiny")
    image = where["data"] / ("img/1.png" if case.kind == "png_image" else "img/0.jpg")
    if case.kind.startswith("snapshot"):
        return train.main, TRAIN_ARGS + ["--data-dir", where["data"], "--data-list",
                                         where["data"] / "list.txt", "--snapshot-dir",
                                         where["snap"]]
    if case.kind == "prototxt":
        return convert.main, [where["tiny.prototxt"], "--caffemodel", where["tiny.caffemodel"],
                              "--ckpt-path", case.out / "c"]
    if case.kind in ("label", "list"):
        return evaluate.main, ["--data-dir", where["data"], "--data-list",
                               where["data"] / "list.txt", "--restore-from", weights,
                               "--json-output", case.out / "report.json"]
    extra = ["--model", "tiny"] if case.kind == "caffemodel" else []
    return inference.main, [image, weights, "--save-dir", case.out] + extra


def problems(case, corpus, code, out, err):
    """What the finished case did wrong (an empty list when it kept the contract)."""
    lines = err.strip().splitlines()
    found = []
    if "Traceback" in err:
        found.append("a traceback")
    if code not in (0, 1, 2):
        found.append(f"exit status {code}")
    if code != 0:
        if len(lines) != 1 or not lines[0].startswith("error: "):
            found.append("not exactly one stderr line `error: ...`")
        elif not lines[0].isprintable() or len(lines[0]) > MAX_ERROR_LENGTH:
            found.append(f"an unreadable error line ({len(lines[0])} characters, raw bytes "
                         "echoed?)")
        if case.out.exists() and any(p.is_file() for p in case.out.rglob("*")):
            found.append(f"output left behind: {sorted(p.name for p in case.out.rglob('*'))}")
        if case.kind.startswith("snapshot"):
            before = sorted(p.name for p in (corpus / "snap").iterdir())
            if sorted(p.name for p in (case.folder / "snap").iterdir()) != before:
                found.append("the snapshot folder changed")
        return found
    return found + _wrong_output(case, corpus, out + err)


def _wrong_output(case, corpus, printed):
    """What is missing or wrong in a successful case's output (`printed`: stdout + stderr)."""
    if case.kind.startswith("snapshot"):
        return [] if "nothing to do" in printed else ["resumed run did not say it was done"]
    if case.kind == "prototxt":
        return [] if (case.out / "c.index").exists() else ["no converted checkpoint"]
    if case.kind in ("label", "list"):
        return [] if (case.out / "report.json").exists() else ["no report"]
    stem = "1" if case.kind == "png_image" else "0"
    mask = case.out / f"{stem}_mask.png"
    if not mask.exists():
        return ["no mask written"]
    if case.kind in ("image", "png_image"):
        with Image.open(case.folder / "data" / f"img/{stem}.{'png' if stem == '1' else 'jpg'}") \
                as image, Image.open(mask) as labels:
            return [] if image.size == labels.size else ["mask of another size than the image"]
    if case.kind not in CHECKSUMMED:
        return []
    reference = np.asarray(Image.open(corpus / "reference" / "0_mask.png"))
    if not np.array_equal(np.asarray(Image.open(mask)), reference):
        return ["mask differs from the good weights' mask (wrong weights accepted)"]
    return []


def run_case(corpus, seed, index, folder, case=None):
    """Makes and runs one case in `folder` (or runs `case`); returns (case, problems, stderr)."""
    case = case or make_case(corpus, seed, index, folder)
    main, argv = command(case, corpus)
    code, out, err = run(main, argv)
    return case, problems(case, corpus, code, out, err), err


def remove(folder):
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder, exist_ok=True)
