"""Validation while training (`TrainConfig.val_list`): evaluate.py's scores on the chief, the
best checkpoint kept in SNAPSHOT_DIR/best/.

Every `val_every` updates (default: every checkpoint, `save_pred_every`) and at the
last update of the run (`num_steps`), the loop saves a checkpoint and the chief scores
the model on `val_list` through `predict.evaluation` with `make_predictor`, exactly as
evaluate.py scores that checkpoint with the same protocol (`val_scales`, `val_flip`,
`val_deeplab_protocol`, `val_pad_size`; float32). The mean IoU is logged as progress
and written to TensorBoard as `val/mean_iou`.

The best checkpoint so far is copied to SNAPSHOT_DIR/best/ (its files, a `checkpoint`
state file, so that `--restore-from SNAPSHOT_DIR/best/` works, and `best.json`:
`{"update": N, "mean_iou": x}`); checkpoint rotation never touches that folder.
SNAPSHOT_DIR/validation.json holds every score so far (`{"mean_iou": {"N": x}}`): a
resumed run keeps the best so far, and scores first a resumed checkpoint that was due
but not scored (a run killed between the save and the scores), so that its results
equal an uninterrupted run's. Stopping early (`stop_after`, a signal) validates nothing
extra: what is scored does not depend on where a run was interrupted.
"""

import glob
import json
import logging
import os
import shutil

import tensorflow as tf

from deeplab_resnet.data.lists import read_list
from deeplab_resnet.errors import SettingError
from deeplab_resnet.files import atomic_path
from deeplab_resnet.predict import evaluation
from deeplab_resnet.predict.config import PredictConfig
from deeplab_resnet.predict.prediction import make_predictor
from deeplab_resnet.training import summaries

log = logging.getLogger(__name__)
BEST_DIR = "best"
BEST_FILE = "best.json"
HISTORY_FILE = "validation.json"


def due(config, update):
    """Whether update `update` is validated (and so saved): every `val_every` (default
    `save_pred_every`) updates, and the run's last."""
    if config.val_list is None:
        return False
    every = config.val_every or config.save_pred_every
    return update % every == 0 or update == config.num_steps


def read_val_list(config):
    """The (image, label) pairs of `val_list`; errors name the validation's settings."""
    data_dir = config.val_data_dir if config.val_data_dir is not None else config.data_dir
    try:
        images, labels = read_list(data_dir, config.val_list)
    except SettingError as exc:
        names = {"data_list": "val_list",
                 "data_dir": "val_data_dir" if config.val_data_dir is not None else "data_dir"}
        template = exc.template
        for field, name in names.items():
            template = template.replace("{" + field + "}", "{" + name + "}")
        raise SettingError(template, *(names.get(f, f) for f in exc.fields),
                           path=exc.path) from None
    return list(zip(images, labels))


def _read_json(path):
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _write_json(document, path):
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(document, f, indent=2)


def for_run(run):
    """The `Validation` of a run (the loop's `_Run`) on its chief, or `NoValidation`."""
    if not run.chief or run.config.val_list is None:
        return NoValidation()
    return Validation(run.config, run.snapshot_dir, run.state.model)


class NoValidation:
    """What a run without validation, or a worker other than the chief, validates: nothing."""

    def catch_up(self, start, latest, writer=None):
        return writer

    def run(self, update, checkpoint, writer):
        return None


class Validation:
    """The validation of one run on its chief.

    Args:
        config: the `TrainConfig` (with `val_list`).
        snapshot_dir: the run's checkpoint folder.
        model: the `DeepLabResNet` being trained (scored with its current weights).
    """

    def __init__(self, config, snapshot_dir, model):
        self.config = config
        self.model = model
        self.pairs = read_val_list(config)
        self.best_dir = os.path.join(snapshot_dir, BEST_DIR)
        self.history_path = os.path.join(snapshot_dir, HISTORY_FILE)
        self.history = (_read_json(self.history_path) or {}).get("mean_iou", {})
        self.best = _read_json(os.path.join(self.best_dir, BEST_FILE))

    def scored(self, update):
        """Whether update `update` has been scored (by this run or before a resume)."""
        return str(update) in self.history

    def catch_up(self, start, latest, writer=None):
        """Scores the resumed checkpoint `latest` (update `start`) when it was due but not
        scored (a run killed between saving and scoring it); returns the summary writer
        (made here when `writer` is None and it is due)."""
        if latest is None or not due(self.config, start) or self.scored(start):
            return writer
        if writer is None:
            writer = tf.summary.create_file_writer(os.path.dirname(latest))
        self.run(start, latest, writer)
        writer.flush()
        return writer

    def mean_iou(self):
        """The mean IoU of the model now on `val_list` (None when no class has an IoU)."""
        config = self.config
        protocol = PredictConfig(scales=tuple(config.val_scales), flip=config.val_flip,
                                 deeplab_protocol=config.val_deeplab_protocol,
                                 pad_size=config.val_pad_size)
        predictor = make_predictor(self.model, protocol)
        confusion = evaluation.evaluate(predictor, self.pairs, self.model.num_classes,
                                        config.ignore_label)
        return evaluation.Scores.from_confusion(confusion).mean_iou

    def run(self, update, checkpoint, writer):
        """Scores update `update` (saved as the checkpoint prefix `checkpoint`) when it is
        `due`, keeps it in best/ when it is the best so far, logs and writes `val/mean_iou`;
        returns the score (None when not due)."""
        if not due(self.config, update):
            return None
        score = self.mean_iou()
        if score is not None:
            with writer.as_default():
                summaries.write_scalar("val/mean_iou", score, update)
        better = score is not None and (self.best is None or score > self.best["mean_iou"])
        if better:
            self._keep_best(update, score, checkpoint)
        self.history[str(update)] = score
        _write_json({"mean_iou": self.history}, self.history_path)
        shown = "n/a" if score is None else f"{score:.4f}"
        best = (f"the best so far, kept in {self.best_dir}" if better
                else f"best {self.best['mean_iou']:.4f} at update {self.best['update']}"
                if self.best else "no best yet")
        log.info(f"validation at update {update}: mean IoU {shown} on {len(self.pairs)} "
                 f"images ({best})", extra={"progress": True})
        return score

    def _keep_best(self, update, score, checkpoint):
        """Copies the checkpoint's files into best/, then its state file and best.json, then
        removes what an earlier best left there."""
        os.makedirs(self.best_dir, exist_ok=True)
        name = os.path.basename(checkpoint)
        kept = {BEST_FILE, "checkpoint"}
        for source in sorted(glob.glob(glob.escape(checkpoint) + ".*")):
            target = os.path.join(self.best_dir, os.path.basename(source))
            with atomic_path(target) as tmp:
                shutil.copyfile(source, tmp)
            kept.add(os.path.basename(source))
        state = f'model_checkpoint_path: "{name}"\nall_model_checkpoint_paths: "{name}"\n'
        with atomic_path(os.path.join(self.best_dir, "checkpoint")) as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(state)
        self.best = {"update": int(update), "mean_iou": float(score)}
        _write_json(self.best, os.path.join(self.best_dir, BEST_FILE))
        for leftover in os.listdir(self.best_dir):
            if leftover not in kept:
                path = os.path.join(self.best_dir, leftover)
                if os.path.isfile(path):
                    os.remove(path)
