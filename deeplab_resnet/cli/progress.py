"""Progress lines for output that is not a terminal (nohup, a scheduler, a pipe): where a
progress bar would be drawn, a plain line on stdout at least every minute instead (in the
one format of `errors.progress_line`).

Imports no TensorFlow; the clock is a parameter, so that tests need not wait.
"""

import sys
import time

from deeplab_resnet.errors import duration, progress_line

INTERVAL = 60.0  # seconds between progress lines


class Throttle:
    """Says when a progress line is due: once `interval` seconds passed since the last one.

    Args:
        interval: seconds between lines.
        clock: a function giving seconds (default `time.monotonic`).
    """

    def __init__(self, interval=INTERVAL, clock=time.monotonic):
        self.interval, self.clock = interval, clock
        self.last = clock()

    def due(self):
        """Whether a line is due now (if so, the next one is due `interval` from now)."""
        now = self.clock()
        if now - self.last < self.interval:
            return False
        self.last = now
        return True


minutes = duration  # a duration to show: '42 s', '3.5 min' or '2.1 h'


def write(line):
    """Writes one progress line to stdout, at once."""
    print(line, file=sys.stdout, flush=True)


class EvaluationLines:
    """evaluate's progress off a terminal: images done of the total and the running mean IoU.

    Called as `evaluation.evaluate`'s `progress(done, confusion)`.

    Args:
        total: images to evaluate.
        mean_iou: confusion matrix -> mean IoU (or None).
        interval, clock: as for `Throttle`.
    """

    def __init__(self, total, mean_iou, interval=INTERVAL, clock=time.monotonic):
        self.total, self.mean_iou = total, mean_iou
        self.throttle = Throttle(interval, clock)
        self.started = self.throttle.last

    def __call__(self, done, confusion):
        if not self.throttle.due() or done == self.total:
            return
        score = self.mean_iou(confusion)
        shown = "n/a" if score is None else f"{score:.4f}"
        rate = done / max(self.throttle.last - self.started, 1e-9)
        write(progress_line("evaluate.py", "image", done, self.total,
                            [f"running mean IoU {shown}"], rate, (self.total - done) / rate))
