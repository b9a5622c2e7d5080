"""TensorFlow, imported once with its start-up log lines kept off stderr.

TensorFlow 2.21 prints oneDNN/CPU-feature notices while it loads, before
`TF_CPP_MIN_LOG_LEVEL` takes effect. The scripts promise that bad input gives
exactly one line on stderr, so the library is loaded with stderr pointed at
/dev/null. Every module of the project imports `tf` from here.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _import_tensorflow():
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    try:
        saved = os.dup(2)
    except OSError:  # no usable stderr: nothing to protect
        import tensorflow
        return tensorflow
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        sys.stderr.flush()
        os.dup2(devnull, 2)
        import tensorflow
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    return tensorflow


tf = _import_tensorflow()
# Python-side notices (e.g. retracing hints) are for developers, not users.
tf.get_logger().setLevel("ERROR")
