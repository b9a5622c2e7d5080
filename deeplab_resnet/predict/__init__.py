"""Prediction: images -> labels, and what is built on it: evaluation, CRF, export, the `Segmenter`.

`config` (`PredictConfig`, the settings `Segmenter.load` takes), `prediction` (the one
prediction path: `Predictor`, `Prediction`), `segmenter` (the API's front door), `evaluation`
and `metrics` (confusion matrix and scores), `crf` (dense CRF post-processing), `export`
(SavedModel) and `voc_submission` (the VOC test server's layout). May import `data`, `model`,
`weights`, `runtime` and the base modules; never `training` or `cli`.
"""
