"""Stopping training cleanly on SIGTERM or SIGINT (preempted machines, Ctrl-C).

While a `StopRequests` is active, the first SIGTERM or SIGINT only records a
request; the training loop reads it at the next update boundary (`poll`),
saves a checkpoint there and exits with status 128 + the signal number (143
for SIGTERM, 130 for SIGINT). A second signal acts as it would without us
(Ctrl-C twice interrupts at once, a second SIGTERM terminates).

Under a multi-worker strategy the signal may reach one worker only: `poll`
sums every worker's requests over all replicas (one small all-reduce per
update), so all workers stop after the same update, as their collective
operations require.
"""

import signal
import threading

from deeplab_resnet.tf_quiet import tf

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequests:
    """A context manager catching SIGINT and SIGTERM as stop requests.

    Args:
        strategy: the tf.distribute strategy of the run; requests are agreed
            over its workers when it spans more than one process.
    """

    def __init__(self, strategy):
        self.strategy = strategy
        self.received = None
        self._previous = {}
        # Multi-worker strategies have a cluster; one-process ones have none.
        self._across_workers = strategy.cluster_resolver is not None
        self._identity = tf.function(lambda flags: flags)

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self  # Python delivers signals to the main thread only
        for signum in SIGNALS:
            previous = signal.signal(signum, self._request)
            # None: a handler not installed from Python; the default is the closest.
            self._previous[signum] = signal.SIG_DFL if previous is None else previous
        return self

    def __exit__(self, *exc_info):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _request(self, signum, frame):
        self.received = signum
        # The next one of this signal gets its usual effect.
        signal.signal(signum, self._previous[signum])

    def poll(self):
        """The signal number a stop was requested with (by any worker), else None.

        Call at the same point of every update on every worker.
        """
        if not self._across_workers:
            return self.received
        flags = tf.constant([float(self.received == s) for s in SIGNALS])
        per_replica = self.strategy.run(self._identity, args=(flags,))
        agreed = self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
        for signum, count in zip(SIGNALS, agreed.numpy()):
            if count > 0:
                return signum
        return None


def signal_name(signum):
    """'SIGTERM' for 15, ..."""
    return signal.Signals(signum).name
