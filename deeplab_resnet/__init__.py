"""DeepLab-v2 ResNet for TensorFlow 2: Caffe-exact network, training, evaluation."""

__version__ = "0.1.0"
