"""The box -> mask engine (layer 2): transforms, box-derived prompts, the predictor and its caches,
precision and runtimes, 2D/3D propagation.

Imports numpy and the model core; never napari or Qt.
"""
