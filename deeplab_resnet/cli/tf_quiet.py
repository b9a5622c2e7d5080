"""TensorFlow, loaded with its start-up log lines kept off stderr (for the commands only).

TensorFlow 2.21 prints oneDNN/CPU-feature notices while it loads, before
`TF_CPP_MIN_LOG_LEVEL` takes effect, and its GPU-enabled wheel an error line
when it first looks for a GPU on a machine without one. The commands promise that bad input gives
exactly one line on stderr, so `cli.run` loads TensorFlow with stderr pointed
at /dev/null before the command imports the library. The library itself
imports TensorFlow plainly and changes no global state.
"""

import os
import sys


def import_tensorflow():
    """Imports TensorFlow quietly (once) and keeps its Python-side notices for developers."""
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        saved = os.dup(2)
    except OSError:  # no usable stderr: nothing to protect
        saved = None
    if saved is None:
        import tensorflow
    else:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            sys.stderr.flush()
            os.dup2(devnull, 2)
            import tensorflow
            # Looking for devices here keeps the tensorflow wheel's "failed call to cuInit"
            # line (a machine without a GPU) off stderr too.
            tensorflow.config.list_physical_devices()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)
    # Python-side notices (e.g. retracing hints) are for developers, not users.
    tensorflow.get_logger().setLevel("ERROR")


def close_native_log():
    """From now on TensorFlow's native (C++) log lines go to /dev/null; Python's stderr stays.

    For the end of a multi-worker run (`train_flags.NativeLogClosedAtTheEnd`): the workers
    leave one by one once the last barrier is passed, and those still in the cluster log
    each departure. Called once the work is done, so no line that matters is lost.
    """
    sys.stderr.flush()
    kept = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    sys.stderr = os.fdopen(kept, "w", buffering=1, encoding=sys.stderr.encoding,
                           errors=sys.stderr.errors)
