"""Weights files, every format behind one pipeline: a path resolved, opened and checked once.

`checkpoint` (the pipeline's front: `open_weights`, `load_weights`, `describe`, `rewrite`),
`paths` (what a weights path names: resolved once), `tf_bundle` and `npz_file` (the checks
made before TensorFlow or numpy trusts a file), `tf_reader` (the one reader of TensorFlow
checkpoints), `weights_file` (the opened file, its one factory, the model built from it),
`saving` (checkpoints written atomically), `legacy` (the 2017 port's names), `caffe`
(DeepLab's side of Caffe: deploy prototxts, caffemodel weights) and `conversion` (Caffe ->
this project's formats). May import `model`, `data`, `runtime`, the base modules and `kaffe`.
"""
