"""kaffe: a Caffe -> TensorFlow 2 converter for DeepLab-ResNet and plain Caffe nets.

Reads prototxt/caffemodel files with the project's own `caffe.proto` subset
(`kaffe.caffe_pb`), builds a shape-checked layer graph (`kaffe.graph`), turns
Caffe blobs into TensorFlow-layout parameters (`kaffe.transforms`), and writes
checkpoints, `.npz` files or runnable TF2 code (`kaffe.convert`, `kaffe.emit`).
"""

from kaffe.errors import KaffeError

__all__ = ["KaffeError"]
