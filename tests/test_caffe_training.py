"""train.py against what real Caffe's SGD solver did (golden cases, no Caffe needed).

The shared golden cases (../shared/fixtures/caffe_train/, skipped without it)
and the project's own small cases (tests/data/caffe_train/, made with real
Caffe by tests/tools/check_training_with_caffe.py): train.py runs from the
case's init.caffemodel on its images, whole-image crops, no augmentation, and
its update (after - init) must equal Caffe's per tensor to float32 noise.
The first case runs the script as a process; the others run its command in-process.
"""

import json
import pathlib

import caffe_training
import numpy as np
import pytest
from conftest import SHARED_FIXTURES, run_command
from deeplab_resnet.cli import train as train_command

OWN_CASES = pathlib.Path(__file__).resolve().parent / "data" / "caffe_train"


def golden_cases(folder):
    index = folder / "cases.json"
    if not index.exists():
        return []
    spec = json.loads(index.read_text())
    return [(folder, spec, case, f"{folder.name}-{case['name']}") for case in spec["cases"]]


def all_cases():
    cases = golden_cases(SHARED_FIXTURES / "caffe_train") + golden_cases(OWN_CASES)
    return ([pytest.param(*case[:3], i == 0, id=case[3]) for i, case in enumerate(cases)]
            or [pytest.param(None, None, None, False, id="no-cases")])


@pytest.mark.parametrize("folder, spec, case, as_script", all_cases())
def test_train_py_update_equals_caffe(folder, spec, case, as_script, tmp_path, capfd,
                                      process_state_restored):
    if folder is None:
        pytest.skip("no Caffe training cases present")
    solver = spec["solver"]
    # Data shared by a folder's cases, or each case's own.
    data = {key: case.get(key) or spec[key] for key in ("data_dir", "data_list")}
    snapshot_dir = tmp_path / "snapshots"
    args = (folder / spec["net"], folder / spec["init"], folder / data["data_dir"],
            folder / data["data_list"], snapshot_dir, spec["input_size"], case["batch_size"],
            case["micro_batches"], case["updates"], case["base_lr"], spec["variant"],
            spec["num_classes"])
    weight_decay = case.get("weight_decay", solver["weight_decay"])
    if as_script:
        result = caffe_training.run_train(*args, weight_decay=weight_decay)
        status, err = result.returncode, result.stderr
    else:
        status, _, err = run_command(
            train_command.main, caffe_training.train_args(*args, weight_decay=weight_decay),
            capfd)
    assert status == 0, err[-2000:]

    np.testing.assert_allclose(caffe_training.logged_losses(snapshot_dir), case["caffe_losses"],
                               rtol=0, atol=1e-5)
    init = caffe_training.caffemodel_blobs(folder / spec["init"])
    with np.load(folder / case["after"], allow_pickle=False) as after:
        caffe_after = dict(after)
    ours = caffe_training.trained_params(snapshot_dir)
    names = caffe_training.compared_names(ours, caffe_after)
    # Every blob Caffe trained is compared; BatchNorm and Scale were frozen in both.
    trained = {k for k in caffe_after if not np.array_equal(caffe_after[k], init[k])}
    assert trained <= {caffe_training.caffe_key(n) for n in names}
    errors, overall = caffe_training.update_errors(init, caffe_after, ours, names)
    head = [e for n, e in errors.items() if caffe_training.is_head(n)]
    assert len(head) == 8
    assert overall <= 1e-4, overall
    assert max(head) <= 1e-5, head
    worst = max(errors, key=errors.get)
    assert errors[worst] <= 1e-2, (worst, errors[worst])
