"""The updates' statistics read back from the device in groups, not once per update.

Reading a value back makes the host wait for the device. Read after every
update, a GPU would sit idle while the host reads, writes summaries and
queues the next update. `Readback` keeps the statistics of the updates
dispatched (`UpdateStats` still on the device) and copies them to the host
together, in one read, once `log_every` of them wait and one more has been
dispatched: the device works on that newest update while the host reads the
others. With `log_every` 1 each update is read as soon as it is dispatched (the
host waits for it, and hears of it before the next one starts). The training
loop reads everything waiting before it saves a checkpoint, stops or returns,
so that nothing is saved after an update that went wrong: a run stops at the
same update, with the same message and the same last checkpoint, as if it had
read every update at once.
"""

import dataclasses

from deeplab_resnet.errors import SettingError
from deeplab_resnet.training.step import read_all


@dataclasses.dataclass(frozen=True)
class Update:
    """One update as read back: its number (1-based), its learning rate and its `UpdateStats`
    as Python numbers."""
    number: int
    learning_rate: float
    stats: object


class Readback:
    """The updates dispatched but not yet read, read back in groups of `log_every`.

    Args:
        log_every: updates whose statistics are read together (>= 1).
        told: called with each `Update` read, in order; it may raise to end the run
            (the updates after it are then never told).
    """

    def __init__(self, log_every, told):
        self.log_every = int(log_every)
        self.told = told
        self.waiting = []  # (number, learning rate, UpdateStats on the device)
        self._behind = 0 if self.log_every == 1 else 1  # updates left running while reading

    def add(self, number, learning_rate, stats):
        """Records a dispatched update; reads the older ones once `log_every` of them wait
        behind this one (with `log_every` 1: reads this one)."""
        self.waiting.append((number, learning_rate, stats))
        if len(self.waiting) >= self.log_every + self._behind:
            self.read(keep=self._behind)

    def read(self, keep=0):
        """Reads every update waiting but the newest `keep`, in one copy to the host, and
        tells them in order."""
        ready, self.waiting = (self.waiting[:len(self.waiting) - keep],
                               self.waiting[len(self.waiting) - keep:])
        for (number, learning_rate, _), stats in zip(ready, read_all([s for _, _, s in ready])):
            self.told(Update(number, learning_rate, stats))


class SkipCount:
    """Consecutive updates that float16 loss scaling skipped (gradients that overflowed).

    Args:
        limit: skipped updates in a row that end the run.
    """

    def __init__(self, limit):
        self.limit = int(limit)
        self.in_row = 0

    def count(self, update):
        """Counts `update` (an `Update`); returns True when `limit` updates in a row, this
        one the last, were skipped."""
        self.in_row = self.in_row + 1 if update.stats.skipped else 0
        return self.in_row >= self.limit


def check(update, skips, last_checkpoint, hint):
    """Raises the `SettingError` that ends a run at `update` (an `Update`): a loss (or,
    without loss scaling, gradients) not finite, or `skips` reaching its limit.

    Args:
        skips: the run's `SkipCount` (this update is counted).
        last_checkpoint: the run's latest checkpoint, or "none", for the message.
        hint: what may help a loss that became inf or nan, naming settings as {field}.
    """
    stats = update.stats
    if not stats.ok:
        raise SettingError(f"loss became {stats.loss} at update {update.number}: training "
                           f"stopped without applying it; last checkpoint: {last_checkpoint} "
                           f"{hint}", "learning_rate", "train_bn")
    if skips.count(update):
        raise SettingError(
            f"float16 loss scaling skipped {skips.limit} updates in a row (to update "
            f"{update.number}, loss scale {stats.loss_scale:g}): the gradients overflow "
            f"float16; training stopped; last checkpoint: {last_checkpoint} (train in "
            "{precision} bf16 or fp32, or with a lower {learning_rate}; "
            "{max_skipped_updates} sets the limit)",
            "precision", "learning_rate", "max_skipped_updates")
