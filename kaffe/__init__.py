"""kaffe: a Caffe -> TensorFlow 2 converter for DeepLab-ResNet and plain Caffe nets.

Pure Caffe I/O (numpy and protobuf; no TensorFlow, nothing of deeplab_resnet):
reads prototxt/caffemodel files with the project's own `caffe.proto` subset
(`caffe_pb`, `reader`), builds a shape-checked layer graph with Caffe's size
formulas (`graph`, `layer_shapes`, `sizes`), turns Caffe blobs into TensorFlow-layout
parameters and back (`transforms`), emits runnable TF2 code (`emit`) and
serialises caffemodels (`writer`). `convert` ties reading together. What is
DeepLab-specific (recognising a DeepLab net, checkpoints, the deploy
generator) lives in `deeplab_resnet.weights.caffe`.
"""

from kaffe.errors import KaffeError

__all__ = ["KaffeError"]
