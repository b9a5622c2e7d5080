"""The project's own fuzzer: seeded mutations of every kind of file a command reads
(checkpoint .index/.data, training snapshots and their `checkpoint` state file, the 2017
port's V1 .ckpt, .npz, .caffemodel, prototxt, JPEG/PNG images, label PNGs, list files),
each run in-process through the command that reads it (inference, evaluate, convert,
training resume). Every case must succeed with the right output or end with one line
`error: ...` (exit 2, 1 for a failed write), no traceback, no output left behind (see
tests/fuzzing.py).

FUZZ_CASES (default 120) and FUZZ_SEED (default 0) choose the cases; the release check
runs thousands with tests/fuzz_campaign.py. No case can abort the process any more (the
checkpoint checks of `deeplab_resnet.weights.tf_bundle` refuse what made TensorFlow abort), so
all run in-process; a regression would stop pytest itself, and fuzz_campaign.py, which
runs the cases in a child process, names the case.
"""

import fcntl
import os

import pytest

import fuzz_files as ff
import fuzzing

CASES = int(os.environ.get("FUZZ_CASES", "120"))
SEED = int(os.environ.get("FUZZ_SEED", "0"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The good files, built once per session: under pytest-xdist the first worker to get
    here builds them in the session's folder (which holds every worker's), the others wait
    on a lock there and read the same files (the cases never write to the corpus)."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return fuzzing.build_corpus(tmp_path_factory.mktemp("corpus"))
    session = tmp_path_factory.getbasetemp().parent
    root, done = session / "fuzz_corpus", session / "fuzz_corpus.done"
    with open(session / "fuzz_corpus.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not done.exists():
            fuzzing.remove(root)  # what a worker that failed half-way left
            fuzzing.build_corpus(root)
            done.touch()
    return root


@pytest.mark.parametrize("index", range(CASES))
def test_fuzz_case_keeps_the_error_contract(corpus, index, tmp_path):
    case, problems, err = fuzzing.run_case(corpus, SEED, index, tmp_path)
    assert problems == [], f"case {index} (seed {SEED}): {case.what}: {problems}\n{err}"


# Issue 26: a weights file (and the prototxt) replaced whole, as a failed download or a lost
# write leaves it, is called what it is, in one readable line.
WEIGHTS_KINDS = ("index", "snapshot_index", "v1", "npz", "caffemodel", "prototxt")


@pytest.mark.parametrize("replacement", sorted(ff.REPLACEMENTS))
@pytest.mark.parametrize("kind", WEIGHTS_KINDS)
def test_a_replaced_weights_file_is_called_what_it_is(corpus, kind, replacement, tmp_path):
    case = fuzzing.replaced_case(corpus, kind, replacement, tmp_path)
    case, problems, err = fuzzing.run_case(corpus, SEED, None, tmp_path, case=case)
    assert problems == [], f"{case.what}: {problems}\n{err}"
    [line] = err.strip().splitlines()
    if kind == "prototxt" and replacement == "text":  # a prototxt is text: judged by its syntax
        assert "prototxt syntax error" in line, line
        return
    what = "a checkpoint" if kind in ("index", "snapshot_index", "v1") else {
        "npz": "an .npz of weights", "caffemodel": "a caffemodel", "prototxt": "a prototxt"}[kind]
    assert f": {ff.REPLACED_AS[replacement]}, not {what}: " in line, line
