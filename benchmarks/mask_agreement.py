"""How far two ways of computing the same masks agree: differing pixels and per-object DSC.

Our schedule and the reference-style one run the same model on the same inputs, but not the
same kernels: a decoder call on 16 boxes and 16 calls on one box each sum their products in
another order (the matrix-multiply blocking depends on the batch), and that order differs
between CPUs. The logits then differ by float32 rounding, and a pixel whose logit lies that
close to 0 can flip. So the benchmark reports the count of differing pixels and the lowest
per-object DSC, never a bit-for-bit equality.
"""

from __future__ import annotations

import numpy as np

from napari_swinlitemedsam.evaluation.metrics import dice


def mask_agreement(ours: np.ndarray, reference: np.ndarray) -> dict:
    """Compare (N, ...) bool masks object by object.

    Returns ``differing_pixels`` (over all objects), ``min_object_dsc``, ``mean_object_dsc``
    and ``equal`` (True only when no pixel differs). DSC is 1.0 for an object empty in both.
    """
    ours, reference = np.asarray(ours, bool), np.asarray(reference, bool)
    if ours.shape != reference.shape:
        raise ValueError(f"masks of shape {ours.shape} and {reference.shape} cannot be compared")
    # dice() is NaN for an object empty in both; they agree perfectly there
    scores = [1.0 if not (a.any() or b.any()) else dice(a, b) for a, b in zip(ours, reference)]
    scores = scores or [1.0]
    differing = int((ours != reference).sum())
    return {
        "differing_pixels": differing,
        "min_object_dsc": float(min(scores)),
        "mean_object_dsc": float(np.mean(scores)),
        "equal": differing == 0,
    }


def label_agreement(ours: np.ndarray, reference: np.ndarray, count: int) -> dict:
    """:func:`mask_agreement` of two label volumes, objects ``1..count``."""
    labels = range(1, count + 1)
    return mask_agreement(
        np.stack([ours == k for k in labels]), np.stack([reference == k for k in labels])
    )


def describe(agreement: dict) -> str:
    """'3 pixels differ, lowest object DSC 0.9987' (or 'identical')."""
    if agreement["equal"]:
        return "identical"
    return (
        f"{agreement['differing_pixels']} pixels differ, lowest object DSC "
        f"{agreement['min_object_dsc']:.4f}"
    )
