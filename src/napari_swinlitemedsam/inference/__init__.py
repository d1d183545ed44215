"""Inference API (layer 2): transforms, box prompts, predictor, 2D/3D pipelines, I/O, metrics.

Imports numpy and the model core; never napari or Qt.
"""
