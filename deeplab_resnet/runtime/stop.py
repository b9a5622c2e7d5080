"""Stopping training cleanly at an update boundary: `StopRequest` and its agreement over workers.

Anything may ask a run to stop: a signal handler (the training commands wire
SIGTERM and SIGINT to it), another thread, a callback. The training loop reads
the request before every update (a flag, no device read); when it is set, the
loop saves a checkpoint of the updates done and returns (`TrainResult.stopped_early`). The library
installs no signal handler: that is the command line's business.

Under a multi-worker strategy the request may reach one worker only: every
worker's request is summed over all replicas (one small all-reduce and a host
read) every `TrainConfig.log_every` updates, at the same updates on every
worker, so all workers stop after the same update, as their collective
operations require, and each learns the request's `code`.
"""

import tensorflow as tf


class StopRequest:
    """A request, settable from anywhere, that training stop at the next update boundary.

    Setting it is two attribute assignments and never blocks, so a signal
    handler may call `request`. The first request wins; later ones are ignored.

    Attributes:
        reason: why the run was asked to stop (None: not asked).
        code: a positive number travelling with the request to every worker (the
            command line passes the signal number).

    Example:
        >>> stop = StopRequest()
        >>> stop.requested
        False
        >>> stop.request("enough for today")
        >>> stop.requested, stop.reason
        (True, 'enough for today')
    """

    def __init__(self):
        self.reason = None
        self.code = None

    @property
    def requested(self):
        return self.reason is not None

    def request(self, reason="stop requested", code=1):
        """Asks the run to stop after the update in progress.

        Args:
            reason: why, for `TrainResult.stop_reason` and messages.
            code: a positive integer shared with the other workers (when two
                workers ask with different codes, every worker sees the largest).
        """
        if self.reason is None:
            self.code = int(code)  # before `reason`, which readers test first
            self.reason = str(reason)


class StopAgreement:
    """Whether a run must stop now: its `StopRequest`, agreed over the workers of `strategy`.

    Args:
        stop: the run's `StopRequest`.
        strategy: the tf.distribute strategy of the run; the request is agreed
            over its workers when it spans more than one process.

    Attributes:
        across_workers: whether `poll` agrees over several processes (a collective
            operation and a host read: the training loop then polls every
            `log_every` updates, at the same updates on every worker).
    """

    def __init__(self, stop, strategy):
        self.stop = stop
        self.strategy = strategy
        # Multi-worker strategies have a cluster; one-process ones have none.
        self.across_workers = strategy.cluster_resolver is not None
        replicas = strategy.num_replicas_in_sync

        @tf.function(autograph=False)
        def slot(code):  # each replica's code in its own slot: the sum holds them all
            context = tf.distribute.get_replica_context()
            return tf.one_hot(context.replica_id_in_sync_group, replicas) * code

        self._slot = slot

    def poll(self):
        """True when this worker or any other asked to stop (call at the same point on every
        worker). A request seen only elsewhere is recorded in this worker's `StopRequest`."""
        if not self.across_workers:
            return self.stop.requested
        code = tf.constant(float(self.stop.code) if self.stop.requested else 0.0)
        codes = self.strategy.reduce(tf.distribute.ReduceOp.SUM,
                                     self.strategy.run(self._slot, args=(code,)), axis=None)
        agreed = int(tf.reduce_max(codes).numpy())
        if agreed and not self.stop.requested:
            self.stop.request("stop requested on another worker", agreed)
        return agreed > 0
