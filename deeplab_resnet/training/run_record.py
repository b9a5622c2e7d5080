"""What a training run is, so that a snapshot folder only ever resumes that run.

Every checkpoint a training script writes holds `meta/run`: a JSON record of
the script, the model, the data list (its contents' digest) and every setting
that changes the updates (global batch, micro-batches, crop size, optimizer
constants, augmentation, seed, scales, precision, ...). A rerun resumes only
when its own record agrees with the latest checkpoint's; otherwise it stops
with one line naming the folder, what it holds and the ways out (`ways_out`),
each a setting with a value that, given as it reads, gets past the refusal.

Not compared: the number of updates (a changed total re-targets the poly
schedule from the current update), how the work is laid out (replicas x
per-replica batch, as long as the global batch is the same), and settings
that change no number (checkpoint interval, XLA, determinism, ...). The
starting weights (`restore_from`) and the model and class count are compared
only when given: a resume needs none of them.

Checkpoints written before records existed are resumed with a warning naming
what cannot be checked; their variant and class count are still checked.
"""

import hashlib
import json
import logging
import os
import re

import tensorflow as tf

from deeplab_resnet.weights import tf_bundle
from deeplab_resnet.errors import SettingError
from deeplab_resnet.files import unused_path
from deeplab_resnet.training import class_weights

# The checkpoint key of the record: tf.train.Checkpoint(meta={"run": <string variable>}).
KEY = "meta/run/.ATTRIBUTES/VARIABLE_VALUE"
_STEP_KEY = "step/.ATTRIBUTES/VARIABLE_VALUE"
_MODEL_KEY = "meta/model/.ATTRIBUTES/VARIABLE_VALUE"
_CLASSES_KEY = "meta/num_classes/.ATTRIBUTES/VARIABLE_VALUE"

# Entries that are compared only when the rerun states them (None: not given).
OPTIONAL = ("model", "num_classes", "restore_from", "not_restore_last", "class_names",
            "class_colours", "class_weights_computed")
# Entries shown but never compared: where things are, and the total (see the docstring).
NOT_COMPARED = ("data_list", "data_dir", "batch_size", "replicas", "num_steps", "config_file")
# How a difference is named in messages: a template naming settings by their `TrainConfig`
# field as `{field}` (default: the key is the field, e.g. `{learning_rate}`).
LABELS = {"script": "script", "list_sha256": "{data_list} contents", "images": "list lines",
          "global_batch": "global batch ({batch_size} x replicas)",
          "micro_batches": "{grad_update_every}", "model": "{variant}",
          "is_training": "{train_bn}", "not_restore_last": "{new_head}",
          "mixed_precision": "{precision}", "class_colours": "{classes} colours"}
# Values recorded under another name than the field's ("none": float32 before `precision`).
_RECORDED = {"mixed_precision": {"fp32": "none"}}

# Settings that change the updates of a run, recorded under these keys (the names records have
# always had) from these `TrainConfig` fields; those a recipe does not use are left out.
_RUN_SETTINGS = {"input_size": "input_size", "learning_rate": "learning_rate",
                 "random_mirror": "random_mirror", "random_scale": "random_scale",
                 "scale_mode": "scale_mode", "random_seed": "random_seed",
                 "mixed_precision": "precision", "ignore_label": "ignore_label",
                 "ohem_fraction": "ohem_fraction"}
_SGD_SETTINGS = {"momentum": "momentum", "power": "power", "weight_decay": "weight_decay"}
_BN_SETTINGS = {"is_training": "train_bn", "bn_momentum": "bn_momentum"}


def list_digest(data_list):
    """SHA-256 of a list file's entries (fields of its non-blank lines): its data and order."""
    digest = hashlib.sha256()
    with open(data_list, "rb") as f:
        for line in f:
            fields = line.split()
            if fields:
                digest.update(b" ".join(fields) + b"\n")
    return digest.hexdigest()


def settings_of(config, recipe):
    """The `settings` of `new` for a `TrainConfig` trained by a `Recipe`: what changes the
    updates, the total and the starting weights."""
    keys = dict(_RUN_SETTINGS)
    if recipe.optimizer == "sgd":
        keys.update(_SGD_SETTINGS)
    if not recipe.head_only:
        keys.update(_BN_SETTINGS)
    if recipe.multi_scale:
        keys["scales"] = "scales"
    settings = {key: getattr(config, field) for key, field in keys.items()}
    settings = {key: _RECORDED.get(key, {}).get(value, value) for key, value in settings.items()}
    given = config.restore_from is not None
    config_file = None if config.config_file is None else os.path.abspath(config.config_file)
    return dict(settings, class_weights=class_weights.recorded(config.class_weights),
                class_weights_computed=None, config_file=config_file,
                num_steps=config.num_steps, model=config.variant,
                num_classes=config.num_classes, class_names=config.class_names,
                class_colours=config.class_colours,
                restore_from=os.path.abspath(config.restore_from) if given else None,
                not_restore_last=config.new_head if given else None)


def new(script, data_list, data_dir, images, batch_size, replicas, micro_batches, settings):
    """The record of the run a command asks for.

    Args:
        script: the training script's name.
        data_list, data_dir: the list file and its folder (shown, not compared).
        images: lines of the list.
        batch_size, replicas, micro_batches: per-replica batch, replicas in
            sync, mini-batches per update; their product is what is compared.
        settings: every other setting that changes the updates, {name: value}
            with JSON values, including `OPTIONAL` ones (None when not given)
            and `num_steps`.
    """
    return {"script": script, "data_list": os.path.abspath(data_list),
            "data_dir": os.path.abspath(data_dir) if data_dir else None,
            "images": int(images), "list_sha256": list_digest(data_list),
            "batch_size": int(batch_size), "replicas": int(replicas),
            "global_batch": int(batch_size) * int(replicas), "micro_batches": int(micro_batches),
            **json.loads(json.dumps(settings))}  # tuples become lists, as when read back


def read(prefix):
    """(record or None, update count) of a training checkpoint.

    A checkpoint without a record gives a partial one: its variant and class
    count, when it records them.
    """
    tf_bundle.check(prefix)
    reader = tf.train.load_checkpoint(prefix)
    step = int(reader.get_tensor(_STEP_KEY)) if reader.has_tensor(_STEP_KEY) else None
    if reader.has_tensor(KEY):
        return json.loads(_text(reader.get_tensor(KEY))), step
    if reader.has_tensor(_MODEL_KEY):
        return {"model": _text(reader.get_tensor(_MODEL_KEY)),
                "num_classes": int(reader.get_tensor(_CLASSES_KEY))}, step
    return {}, step


def _text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def _label(key):
    return LABELS.get(key, "{" + key + "}")


def _label_fields(keys):
    """The `TrainConfig` fields the labels of `keys` name."""
    return [field for key in keys for field in re.findall(r"\{(\w+)\}", _label(key))]


def _shown(key, value):
    if isinstance(value, list):  # as the flag is typed: input size 321,321, class names
        return ",".join(str(item) for item in value)
    recorded_as = {saved: given for given, saved in _RECORDED.get(key, {}).items()}
    value = recorded_as.get(value, value)
    if isinstance(value, str) and len(value) > 12 and all(c in "0123456789abcdef" for c in value):
        return value[:8]  # a digest
    return "none" if value is None else str(value).replace(" ", "")


def differences(saved, wanted):
    """["<label> <saved> there, <wanted> here"] for the compared entries that differ; the
    labels name settings as `{setting}` (see `SettingError`)."""
    found = []
    for key, value in wanted.items():
        if key in NOT_COMPARED or key not in saved:
            continue
        if key in OPTIONAL and value is None:
            continue
        if saved[key] != value:
            found.append(f"{_label(key)} {_shown(key, saved[key])} there, "
                         f"{_shown(key, value)} here")
    return found


def describe(saved, step):
    """What a checkpoint holds, in a few words: 'train.py, update 300 of 20001'."""
    parts = [saved.get("script", "a run written before run records")]
    if step is not None:
        total = saved.get("num_steps")
        parts.append(f"update {step}" + (f" of {total}" if total else ""))
    if "model" in saved:
        parts.append(f"{saved['model']}, {saved['num_classes']} classes")
    return ", ".join(parts)


def ways_out(folder, latest, restore_from=None):
    """How to start the run asked for when `folder` holds another one: a message part
    naming `{snapshot_dir}` and `{restore_from}` with values to give as they read.

    Each way needs a new snapshot folder: a refused folder stays refused whatever
    else changes. The way from `latest`'s weights is offered only when no starting
    weights were given (it would replace them).

    Args:
        folder: the refused snapshot folder, as given.
        latest: its newest checkpoint prefix.
        restore_from: the starting weights asked for, or None.
    """
    new = unused_path(folder)
    fresh = f"to start this run, give a new {{snapshot_dir}}, e.g. {{snapshot_dir}} {new}"
    if restore_from is not None:
        return fresh
    return (f"{fresh}; to start it from that run's weights: {{snapshot_dir}} {new} "
            f"{{restore_from}} {latest}")


def check_resume(latest, folder, wanted):
    """The record to write from now on, when `latest` may be resumed by the run `wanted`.

    Args:
        latest: the newest checkpoint prefix in the snapshot folder.
        folder: the snapshot folder (for messages).
        wanted: `new(...)` for the run being started.
    Returns:
        (record, notes): the record to store in the next checkpoints (the
        saved one's starting weights and model kept when the rerun omits
        them), and what is worth telling the user (a changed total, an
        unchecked old checkpoint) as (logging level, template, fields): a
        message naming settings as `{field}` (see `SettingError`).
    Raises:
        SettingError: one line naming the folder, what it holds and the ways out.
    """
    saved, step = read(latest)
    found = differences(saved, wanted)
    if found:
        shown = "; ".join(found[:4]) + ("; ..." if len(found) > 4 else "")
        raise SettingError(f"{{snapshot_dir}} {folder} holds another run "
                           f"({describe(saved, step)}; {shown}): "
                           f"{ways_out(folder, latest, wanted.get('restore_from'))}",
                           "snapshot_dir", "restore_from", "data_list",
                           "batch_size", "grad_update_every", *_label_fields(wanted))
    record = dict(wanted)
    for key in OPTIONAL:
        if record.get(key) is None and key in saved:
            record[key] = saved[key]
    notes = []
    if "script" not in saved:
        notes.append((logging.WARNING, f"warning: {latest} was written before run records: "
                       f"cannot check that it is {wanted['script']}'s run with these data and "
                       "settings; resuming it", ()))
    elif saved.get("num_steps") != wanted["num_steps"]:
        notes.append((logging.INFO, f"{{num_steps}} {saved.get('num_steps')} -> "
                      f"{wanted['num_steps']}: the learning-rate schedule now ends at update "
                      f"{wanted['num_steps']}", ("num_steps",)))
    return record, notes


def variable(record):
    """The string variable that holds `record` in a checkpoint (as `meta/run`)."""
    return tf.Variable(json.dumps(record, sort_keys=True), trainable=False, name="run")
