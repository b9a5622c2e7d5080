"""tf.distribute for the training loop: the strategies, the chief, replicated variables, sums.

Three strategies (`TrainConfig.strategy`):

- `default`: one process, one device (TensorFlow's default strategy).
- `mirrored`: `tf.distribute.MirroredStrategy` over the local GPUs (the CPU
  when there is none, or each of its logical devices when it is split:
  `devices.use_logical_cpus`, `DEEPLAB_LOGICAL_CPUS`); one process.
- `multi-worker`: `tf.distribute.MultiWorkerMirroredStrategy`, one process per
  machine, the cluster described by the `TF_CONFIG` environment variable as
  TensorFlow documents it, e.g. on the first of two machines:

      TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]},
                  "task": {"type": "worker", "index": 0}}'

Every replica reads `batch_size` examples, so the global batch is
`batch_size` x replicas; losses are normalised by the valid pixels of the
whole global batch (`sum_over_replicas`) and gradients summed over replicas,
so one update equals the single-process update on the global batch.
"""

import json
import os

import tensorflow as tf

from deeplab_resnet import settings
from deeplab_resnet.errors import SettingError, DeepLabError


def check_tf_config(text):
    """Validates a TF_CONFIG value for multi-worker training.

    Returns:
        the parsed {"cluster": {...}, "task": {...}}.
    Raises:
        SettingError (field `strategy`) when TF_CONFIG is unset or empty; DeepLabError
        naming what is wrong in a TF_CONFIG that is not JSON or not a cluster and a task.
    """
    if not text:
        raise SettingError("{strategy} multi-worker: set TF_CONFIG, e.g. "
                           '\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                           '"task": {"type": "worker", "index": 0}}\'', "strategy")
    try:
        config = json.loads(text)
    except ValueError as exc:
        raise DeepLabError(f"TF_CONFIG is not JSON ({exc})") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not cluster.get("worker") and not cluster.get("chief"):
        raise DeepLabError("TF_CONFIG: 'cluster' must list the 'worker' addresses (host:port)")
    for job, addresses in cluster.items():
        if not isinstance(addresses, list) or not all(
                isinstance(a, str) and a.rpartition(":")[2].isdigit() for a in addresses):
            raise DeepLabError(f"TF_CONFIG: cluster '{job}' must be a list of 'host:port' strings")
    if not isinstance(task, dict) or task.get("type") not in cluster:
        raise DeepLabError(f"TF_CONFIG: 'task' must name a 'type' of the cluster "
                        f"({', '.join(cluster)}) and an 'index'")
    index = task.get("index")
    if not isinstance(index, int) or not 0 <= index < len(cluster[task["type"]]):
        raise DeepLabError(f"TF_CONFIG: task index {index!r} is not in 0..."
                        f"{len(cluster[task['type']]) - 1} of cluster '{task['type']}'")
    return config


def make_strategy(name):
    """The tf.distribute strategy called `name` (one of `settings.STRATEGIES`).

    Create it before anything else touches TensorFlow's runtime: the
    multi-worker strategy configures the runtime for the cluster.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        cpus = tf.config.list_logical_devices("CPU")
        if not tf.config.list_logical_devices("GPU") and len(cpus) > 1:
            # Sums gathered on one device: TensorFlow 2.21's collective ops on logical CPUs
            # paired the sums of one replica function wrongly at times ("Shape mismatch in
            # the collective instance"; benchmarks/gpu_check.py checks GPUs for it).
            return tf.distribute.MirroredStrategy(
                [device.name for device in cpus],
                cross_device_ops=tf.distribute.ReductionToOneDevice())
        return tf.distribute.MirroredStrategy()
    if name == "multi-worker":
        check_tf_config(os.environ.get("TF_CONFIG"))
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown strategy '{name}' (choose from {', '.join(settings.STRATEGIES)})")


def is_chief(strategy):
    """Whether this process writes checkpoints and summaries (TensorFlow's rule).

    The chief is the task of type 'chief', else worker 0; a single-process
    strategy is always the chief.
    """
    resolver = strategy.cluster_resolver
    if resolver is None or resolver.task_type in (None, "chief"):
        return True
    return (resolver.task_type == "worker" and resolver.task_id == 0
            and "chief" not in resolver.cluster_spec().as_dict())


def replicate(strategy, table):
    """Replaces the numeric variables of the dict `table` by copies made under `strategy`.

    Variables a strategy must mirror are created in its scope; the model is
    built first (numpy initialisation, checkpoint or caffemodel loading) and
    copied here. String variables (the model's `meta["model"]`) stay as
    they are: a multi-worker strategy cannot broadcast strings, and they are
    read-only metadata.
    """
    with strategy.scope():
        for key, variable in list(table.items()):
            if variable.dtype != tf.string:
                table[key] = tf.Variable(variable, trainable=variable.trainable,
                                         name=variable.name.split(":")[0])


def sum_over_replicas(value):
    """Sum of `value` (a tensor or nested structure) over all replicas.

    Call in replica context (inside `strategy.run`); with one replica, or
    outside any strategy, `value` itself.
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


def gather_over_replicas(value):
    """`value` of every replica, concatenated along its first axis in replica order.

    Call in replica context (inside `strategy.run`); with one replica, or
    outside any strategy, `value` itself. Every replica's `value` must have the
    same shape.
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_gather(value, axis=0)


def barrier(strategy):
    """Returns once every replica of every worker has reached it (a sum over replicas).

    At the end of training, so that the chief, which hosts the cluster's
    coordination service, does not exit while other workers still talk to it.
    """
    ones = strategy.run(_one)
    strategy.reduce(tf.distribute.ReduceOp.SUM, ones, axis=None)


# One function for every barrier: a new one per call would be traced each time, and
# TensorFlow warns of "retracing" once a process has run a few trainings.
_one = tf.function(lambda: tf.constant(1.0), autograph=False)
