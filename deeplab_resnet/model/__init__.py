"""The network: DeepLab-v2's atrous ResNet + ASPP, described once and built from that description.

`arch` (the Caffe-named layers, parameter names and shapes, one traversal), `layers` (Caffe-exact
convolution, pooling, BatchNorm), `network` (`DeepLabResNet`, `preprocess`), `fused` (BatchNorm
folded into the convolutions for inference), `msc` (the multi-scale wrapper) and `geometry`
(DeepLab's align-corners geometry of logits, labels and images). May import `runtime`, the base
modules (`errors`, `defaults`, `files`) and, in `layers` only, `kaffe.sizes` (Caffe's size rules).
"""
