"""--strategy: two workers on localhost equal one process with their global batch;
mirrored on this machine's device; TF_CONFIG errors; sharding of the input."""

import json
import os
import socket
import subprocess
import sys
import types

import numpy as np
import pytest

from deeplab_resnet import training
from deeplab_resnet.weights import checkpoint
from deeplab_resnet.runtime import distribute
from deeplab_resnet.data import shapes
from deeplab_resnet.cli import train_flags
from deeplab_resnet.errors import DeepLabError
from deeplab_resnet.data.pipeline import ImageReader
from deeplab_resnet.model.network import DeepLabResNet
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED = 7

# Trains through the API, one run after the other on one strategy (one cluster), with a
# callback that records the weights of every checkpoint saved (all workers save; only the
# chief's checkpoints stay), so that every worker can be compared; the log is shown as the
# commands show it. Argument: a JSON list of [weights file, train.py arguments].
DRIVER = """
import json
import sys
import numpy as np
from deeplab_resnet import training
from deeplab_resnet.weights import checkpoint
from deeplab_resnet.runtime import distribute
from deeplab_resnet.cli import train_flags
from deeplab_resnet.cli.reporting import reporting
class Record(training.Callback):
    def __init__(self, weights_file):
        self.weights_file = weights_file
    def on_checkpoint(self, update, path):
        params = checkpoint.read_params(path)
        np.savez(self.weights_file, **{k.replace("/", "|"): v for k, v in params.items()})
strategy = distribute.make_strategy("multi-worker")
with reporting():
    for weights_file, argv in json.loads(sys.argv[1]):
        args = train_flags.build_parser(training.TRAIN).parse_args(argv)
        training.train(train_flags.config_from_args(args), "train",
                       callbacks=[Record(weights_file)], strategy=strategy)
"""
# BatchNorm frozen, and trained (synchronised over the workers).
BATCHNORM = {"frozen-bn": [], "synchronised-bn": ["--is-training", "--bn-momentum", "0.9"]}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return shapes.make_shapes_dataset(tmp_path_factory.mktemp("shapes"), num_train=16,
                                      num_val=1, seed=5)


def tiny_args(data, snapshot_dir, batch_size, *extra):
    return ["--model", "tiny", "--num-classes", str(len(shapes.CLASSES)),
            "--data-dir", data["root"], "--data-list", data["train"], "--input-size", "40,40",
            "--batch-size", str(batch_size), "--snapshot-dir", str(snapshot_dir),
            "--random-seed", str(SEED), "--random-scale", "--random-mirror",
            "--learning-rate", "1e-4", "--num-steps", "4", "--save-pred-every", "2",
            "--save-num-images", "1", *map(str, extra)]


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def driver_env():
    """The driver script lives in a temporary folder: import this checkout's package."""
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", PYTHONPATH=ROOT)


def worker_env(ports, index):
    env = driver_env()
    env["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"localhost:{p}" for p in ports]},
                                   "task": {"type": "worker", "index": index}})
    return env


def load(path):
    with np.load(path, allow_pickle=False) as saved:
        return {k.replace("|", "/"): saved[k] for k in saved.files}


def one_process(data, snapshots, batch_size, batchnorm):
    """The weights one process (this one) trains with the global batch."""
    args = train_flags.build_parser(training.TRAIN).parse_args(
        tiny_args(data, snapshots, batch_size, *batchnorm))
    result = training.train(train_flags.config_from_args(args), "train")
    return checkpoint.read_params(result.checkpoint)


def test_two_workers_equal_one_process_with_their_global_batch(data, tmp_path):
    """Two workers (processes) train with BatchNorm frozen, then trained: the same weights as
    one process with their global batch. Trained, BatchNorm normalises by the global batch's
    statistics on every worker, so its moving statistics and every weight match too."""
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    per_worker = 2
    ports = free_ports(2)
    workers = [subprocess.Popen(
        [sys.executable, str(driver), json.dumps([
            [str(tmp_path / f"{mode}_worker{i}.npz"),
             # as on a shared file system
             tiny_args(data, tmp_path / mode, per_worker, "--strategy", "multi-worker", *flags)]
            for mode, flags in BATCHNORM.items()])],
        cwd=ROOT, env=worker_env(ports, i), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True) for i in range(2)]
    references = {mode: one_process(data, tmp_path / f"{mode}_single", 2 * per_worker, flags)
                  for mode, flags in BATCHNORM.items()}
    outputs = [w.communicate(timeout=300) for w in workers]
    for worker, (_, err) in zip(workers, outputs):
        assert worker.returncode == 0, err
    # The chief reports, once per run (on stdout, with the progress: issue 26).
    assert outputs[0][0].count("finished:") == 2 and "finished:" not in outputs[1][0]

    start = DeepLabResNet("tiny", len(shapes.CLASSES), seed=SEED).params
    for mode, reference in references.items():
        chief, other = (load(tmp_path / f"{mode}_worker{i}.npz") for i in range(2))
        for key, value in reference.items():
            np.testing.assert_array_equal(chief[key], other[key], err_msg=f"{mode}: {key}")
            # Compare the change from the initial weights: the weights themselves barely move.
            delta, expected = chief[key] - start[key].numpy(), value - start[key].numpy()
            # Below a few float32 steps of the weights themselves, changes cannot be compared.
            resolution = 4 * np.spacing(np.abs(value).max().astype(np.float32))
            np.testing.assert_allclose(delta, expected, rtol=1e-4,
                                       atol=max(1e-4 * np.abs(expected).max(), resolution),
                                       err_msg=f"{mode}: {key}")
        assert np.abs(reference["fc1_voc12_c0/weights"] - start["fc1_voc12_c0/weights"]).max() > 0
        if BATCHNORM[mode]:  # the moving statistics were updated (from the global batches)
            assert np.abs(reference["bn_conv1/mean"]).max() > 0

        # The chief alone wrote the checkpoints (global positions) and the summaries.
        snapshots = tmp_path / mode
        saved = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(snapshots)))
        assert saved.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE") == 4
        assert saved.get_tensor("data_position/.ATTRIBUTES/VARIABLE_VALUE") == 4 * 2 * per_worker
        files = os.listdir(snapshots)
        assert sum(name.startswith("events.out.tfevents") for name in files) == 1
        assert sorted(name for name in files if name.endswith(".index")) == [
            "model.ckpt-2.index", "model.ckpt-4.index"]


def test_mirrored_strategy_trains_like_the_default(data, tmp_path, process_state_restored):
    """--strategy mirrored on this machine (its GPUs, else the CPU) gives the default's update."""
    results = []
    for strategy in ("default", "mirrored"):
        replicas = distribute.make_strategy(strategy).num_replicas_in_sync
        snapshots = tmp_path / strategy
        args = tiny_args(data, snapshots, 4 // replicas, "--strategy", strategy,
                         "--num-steps", 2)
        assert train_flags.main(training.TRAIN, args) == 0
        results.append(tf.train.load_checkpoint(tf.train.latest_checkpoint(str(snapshots))))
    default, mirrored = results
    for key in default.get_variable_to_shape_map():
        if key.startswith("params/"):
            np.testing.assert_allclose(mirrored.get_tensor(key), default.get_tensor(key),
                                       rtol=1e-5, atol=1e-6, err_msg=key)


def test_shards_of_the_replicas_make_up_the_global_batch(data):
    """Two pipelines of two replicas each read, together, one process's batches of 4 x 2."""
    reader = ImageReader(data["root"], data["train"], (40, 40), random_scale=True,
                         random_mirror=True, seed=SEED)
    single = next(iter(reader.dataset(8, micro_batches=2, start=3)))[1].numpy()
    shards = []
    for pipeline in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline,
                                             num_replicas_in_sync=4)
        shards.append(list(reader.dataset(2, micro_batches=2, start=3, shard=context).take(2)))
    # Element e of pipeline p feeds replica 2p + e: [micro-batch, example, H, W] labels.
    replicas = [labels.numpy() for pipeline in shards for _, labels in pipeline]
    np.testing.assert_array_equal(np.concatenate(replicas, axis=1), single)


@pytest.mark.parametrize("config, message", [
    (None, "set TF_CONFIG"),
    ("{not json", "not JSON"),
    ('{"cluster": {}, "task": {"type": "worker", "index": 0}}', "'worker' addresses"),
    ('{"cluster": {"worker": ["localhost"]}, "task": {"type": "worker", "index": 0}}',
     "'host:port'"),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "ps", "index": 0}}', "'type'"),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}',
     "task index 2"),
])
def test_bad_tf_config_is_a_user_error(config, message):
    with pytest.raises(DeepLabError, match=message):
        distribute.check_tf_config(config)


def test_bad_tf_config_is_one_line(data, tmp_path):
    env = dict(os.environ, TF_CONFIG='{"cluster": {"worker": ["localhost:1"]}}')
    result = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"),
                             *tiny_args(data, tmp_path / "s", 2, "--strategy", "multi-worker")],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: TF_CONFIG: 'task' must name a 'type' of the cluster (worker) and an 'index'"]


@pytest.mark.parametrize("cluster, task, chief", [
    ({"worker": ["a:1", "b:1"]}, ("worker", 0), True),
    ({"worker": ["a:1", "b:1"]}, ("worker", 1), False),
    ({"chief": ["c:1"], "worker": ["a:1"]}, ("chief", 0), True),
    ({"chief": ["c:1"], "worker": ["a:1"]}, ("worker", 0), False),
])
def test_chief_is_the_chief_task_else_worker_0(cluster, task, chief):
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster), task_type=task[0], task_id=task[1])
    assert distribute.is_chief(types.SimpleNamespace(cluster_resolver=resolver)) == chief
    assert distribute.is_chief(tf.distribute.get_strategy())
