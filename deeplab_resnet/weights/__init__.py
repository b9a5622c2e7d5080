"""Weights files, every format behind one pipeline: a path resolved, opened and checked once.

`checkpoint` (the loader: checkpoint prefixes and folders, caffemodels, `.npz`, the 2017 port's
files), `weights_file` (one opened file checked against the network), `tf_bundle` and `npz_file`
(the checks made before TensorFlow or numpy trusts a file), `legacy` (the 2017 port's names),
`caffe` (DeepLab's side of Caffe: deploy prototxts, caffemodel weights) and `conversion` (Caffe
-> this project's formats). May import `model`, `data`, `runtime`, the base modules and `kaffe`.
"""
