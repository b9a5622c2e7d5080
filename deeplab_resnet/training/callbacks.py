"""What `train` tells as it goes (`Callback`) and returns (`TrainResult`). Imports no
TensorFlow, so that the commands' flags and callbacks load without it."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What a `train` call did.

    Attributes:
        checkpoint: prefix of the run's latest checkpoint in `snapshot_dir`
            (None when there is none).
        updates: updates the run has done in all (the checkpoint's update
            number); below `num_steps` when `stop_after` or a stop request ended it.
        last_loss: loss of the last update of this call (None: no update ran).
        stopped_early: whether a `StopRequest` ended the call before it was done.
        stop_reason: the request's reason (None when not stopped early).
    """
    checkpoint: str | None
    updates: int
    last_loss: float | None
    stopped_early: bool = False
    stop_reason: str | None = None


class Callback:
    """Called by `train` as the run goes; override the methods you need (they do nothing here).

    Every worker of a multi-worker run calls its callbacks, with the same values.

    Example:
        >>> class Losses(Callback):
        ...     def __init__(self):
        ...         self.losses = []
        ...     def on_update(self, update, loss, learning_rate):
        ...         self.losses.append(loss)
    """

    def on_update(self, update, loss, learning_rate):
        """After each update: its number (1-based, counting the whole run), its mean loss
        over the global batch and the learning rate it was made with (Python floats)."""

    def on_checkpoint(self, update, path):
        """After each checkpoint saved: the update it holds and the prefix this process wrote
        (on a worker other than the chief: a temporary one, removed when `train` returns)."""

    def on_train_end(self):
        """Once per `train` call, when the work is done (finished, stopped, or nothing to do;
        the last checkpoint saved), before the workers of a multi-worker run wait for each
        other one last time: after that wait each may leave while the others still run."""
