"""Runs of the commands on a CPU split into logical devices, for tests/test_replicas.py.

Run as a script in a process of its own: the CPU can only be split before TensorFlow sets up its
devices, which the test process has long done. With DEEPLAB_LOGICAL_CPUS=2 in the environment,
as the commands read it, `--strategy mirrored` has two replicas. Argument: a JSON object
{"out": folder, "train": [[case, recipe, train arguments], ...], "evaluate": evaluate.py
arguments, "inference": inference.py arguments, "predict": [checkpoint, [image, ...]]}.
Writes {out}/replicas.json: {"replicas": ..., "bf16_native": ..., "predicted": file}.
"""

import json
import os
import sys

import numpy as np


def train_runs(runs):
    from deeplab_resnet import training
    from deeplab_resnet.cli import train_flags
    from deeplab_resnet.runtime import precision

    detect = precision.detect
    for case, recipe, argv in runs:
        if case == "fp16":  # this CPU has no AVX512-FP16: said to have it, float16 runs
            precision.detect = lambda: precision.Hardware(frozenset({"avx512_fp16"}))
        try:
            status = train_flags.main(training.RECIPES[recipe], argv)
        finally:
            precision.detect = detect
        assert status == 0, (case, argv)


def predict_on_replicas(checkpoint, images, out):
    """Each replica's device segments its own image through the `Predictor` of a model whose
    variables are mirrored on the replicas; the labels of every image are saved to `out`."""
    import tensorflow as tf

    from deeplab_resnet.data.images import read_image
    from deeplab_resnet.predict import prediction
    from deeplab_resnet.runtime import distribute
    from deeplab_resnet.weights import checkpoint as ckpt_lib

    strategy = distribute.make_strategy("mirrored")
    model = ckpt_lib.load_weights(checkpoint)
    distribute.replicate(strategy, model.params)
    with strategy.scope():
        predictor = prediction.make_predictor(model, prediction.PredictConfig())
        labels = []
        for device, path in zip(strategy.extended.worker_devices, images):
            with tf.device(device):
                labels.append(predictor.labels(read_image(path)).numpy())
    np.savez(out, *labels)
    return strategy.num_replicas_in_sync


def main(spec):
    from deeplab_resnet import cli
    from deeplab_resnet.cli import evaluate, inference
    from deeplab_resnet.runtime import precision

    train_runs(spec["train"])
    for command, argv in ((evaluate.main, spec["evaluate"]), (inference.main, spec["inference"])):
        try:
            cli.run(command, argv)
        except SystemExit as exc:
            assert cli.exit_status(exc) == 0, argv
    predicted = os.path.join(spec["out"], "predicted.npz")
    replicas = predict_on_replicas(*spec["predict"], predicted)
    with open(os.path.join(spec["out"], "replicas.json"), "w", encoding="utf-8") as f:
        json.dump({"replicas": replicas, "bf16_native": precision.detect().supports("bf16"),
                   "predicted": predicted}, f)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
