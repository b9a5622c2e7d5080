"""Data in: list files, image and label decoding, the training input pipeline, the datasets.

`lists` (list files), `images` and `labels` (decoding and checking files), `palette` (label
colours, overlays, palette PNGs), `datasets` (class names and colours of the benchmarks),
`classes` (classes files: your own dataset's class names and colours),
`pipeline` (the tf.data training input) and `shapes` (a synthetic dataset for tests and demos).
May import `model` (preprocessing), `runtime` and the base modules.
"""
