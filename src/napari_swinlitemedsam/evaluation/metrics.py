"""Dice (DSC) and normalised surface Dice (NSD), scored the way the CVPR 2024 challenge
"Segment Anything in Medical Images on Laptop" scores them.

Surface model
-------------
A binary mask is scored as a 3D voxel volume. Its surface lives on the corner lattice: every
voxel corner looks at the 2 x 2 x 2 voxels around it, and the 8 bits of that neighbourhood
(its *neighbour code*) decide whether the corner is on the surface (code neither 0 nor 255)
and how much surface area the corner carries. The area of a code is the area of the
marching-cubes (Lorensen) triangles of the cube, triangulated around the *minority* corners
(the set corners, or the unset ones when more than four are set), with every triangle
measured in physical units for the given voxel spacing. The table is derived at run time
from :func:`skimage.measure.marching_cubes`.

The distance of a surface corner to the other mask's surface is the Euclidean distance (in
spacing units, e.g. mm) to the nearest surface corner of the other mask. NSD is the surface
area, on both masks, lying within ``tolerance`` of the other surface, divided by the total
surface area of both.

Challenge rules reproduced here
-------------------------------
* Labels scored are ``1 .. gts.max()``, every integer in between included: a label absent
  from both ``gts`` and ``segs`` has DSC NaN, which makes the case mean NaN. Labels that only
  occur in ``segs`` above ``gts.max()`` are ignored.
* Case NSD is computed only when the case mean DSC is above 0.2 (strictly); otherwise, and
  when the case DSC is NaN, case NSD is 0.
* 2D masks ``(H, W)`` are scored as one-voxel-thick slabs ``(H, W, 1)`` with unit spacing,
  so the flat faces of the slab count as surface too.
* The spacing is applied to the array axes in the order given (the challenge passes the
  ``spacing`` stored in the ground-truth file straight through).
* An empty mask against a non-empty one scores DSC 0 and NSD 0; two empty masks score NaN.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

CHALLENGE_TOLERANCE_MM = 2.0
"""Surface tolerance of the challenge NSD, in spacing units (mm for 3D, pixels for 2D)."""

NSD_MIN_CASE_DSC = 0.2
"""The challenge computes NSD only for cases whose mean DSC is above this value."""

_MAX_TRIANGLES_PER_CODE = 4


def _cube_from_code(code: int) -> np.ndarray:
    """The (2, 2, 2) float cube of a neighbour code; bit ``4a + 2b + c`` is corner (a, b, c)."""
    bits = (code >> np.arange(8)) & 1
    return bits.reshape(2, 2, 2).astype(np.float64)


@functools.lru_cache(maxsize=1)
def _triangle_area_vectors() -> np.ndarray:
    """Area vectors of the marching-cubes triangles of every neighbour code.

    Returns a read-only (256, 4, 3) float64 array: for each code, up to four triangles, each
    given by half the cross product of two of its edges (length = area for unit spacing),
    zero-padded. Axis order of the vectors is the array axis order (axis 0, 1, 2).
    """
    from skimage.measure import marching_cubes

    vectors = np.zeros((256, _MAX_TRIANGLES_PER_CODE, 3), dtype=np.float64)
    for code in range(1, 255):
        # Triangulate around the minority corners; the table is then symmetric under
        # complementing the code, as the challenge's table is.
        minority_code = code if code.bit_count() <= 4 else 255 - code
        verts, faces, _, _ = marching_cubes(
            _cube_from_code(minority_code), level=0.5, method="lorensen"
        )
        corners = verts[faces]  # (T, 3 vertices, 3 coordinates)
        cross = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
        vectors[code, : len(faces)] = 0.5 * cross
    vectors.setflags(write=False)
    return vectors


def surface_area_per_code(spacing: Sequence[float]) -> np.ndarray:
    """Surface area carried by each of the 256 neighbour codes, for a 3-axis voxel spacing.

    Returns a (256,) float64 array in squared spacing units. Each triangle's area vector is
    scaled by the spacing (component i by the product of the other two spacings) before its
    length is taken, which is the triangle's area after stretching the lattice.
    """
    s0, s1, s2 = (float(s) for s in spacing)
    scale = np.array([s1 * s2, s0 * s2, s0 * s1])
    return np.linalg.norm(_triangle_area_vectors() * scale, axis=-1).sum(axis=-1)


def _neighbour_codes(mask: np.ndarray) -> np.ndarray:
    """Neighbour code of every voxel corner of a boolean (D, H, W) mask.

    Returns an int32 array of shape (D + 1, H + 1, W + 1): entry (i, j, k) is the corner shared
    by voxels (i - 1 .. i, j - 1 .. j, k - 1 .. k); voxels outside the mask count as empty.
    """
    padded = np.pad(mask.astype(np.int32), 1)
    d, h, w = mask.shape
    codes = np.zeros((d + 1, h + 1, w + 1), dtype=np.int32)
    for a in (0, 1):
        for b in (0, 1):
            for c in (0, 1):
                codes |= padded[a : a + d + 1, b : b + h + 1, c : c + w + 1] << (4 * a + 2 * b + c)
    return codes


def _distance_to_surface(border: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Distance of every lattice corner to the nearest True corner of ``border`` (inf if none)."""
    if not border.any():
        return np.full(border.shape, np.inf)
    return ndimage.distance_transform_edt(~border, sampling=spacing)


def _as_volume(mask: np.ndarray, spacing: Sequence[float] | None) -> tuple[np.ndarray, tuple]:
    """Boolean (D, H, W) view of a 2D or 3D mask and its 3-axis spacing (see module doc)."""
    mask = np.asarray(mask) != 0
    if mask.ndim not in (2, 3):
        raise ValueError(f"masks must be 2D (H, W) or 3D (D, H, W); got shape {mask.shape}")
    spacing_values = _validated_spacing(spacing, mask.ndim)
    if mask.ndim == 2:
        return mask[:, :, None], spacing_values + (1.0,)
    return mask, spacing_values


def _validated_spacing(spacing: Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    """Spacing per array axis as floats; ``None`` means 1 along every axis."""
    if spacing is None:
        return (1.0,) * ndim
    values = np.asarray(spacing, dtype=np.float64).reshape(-1)
    if values.size != ndim or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(
            f"spacing must hold {ndim} finite positive values, one per array axis; got {spacing!r}"
        )
    return tuple(float(v) for v in values)


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice coefficient 2|P & G| / (|P| + |G|) of two same-shape masks (nonzero = foreground).

    Returns NaN when both masks are empty (the challenge's convention).
    """
    pred, gt = np.asarray(pred) != 0, np.asarray(gt) != 0
    _check_same_shape(pred, gt)
    total = int(pred.sum()) + int(gt.sum())
    if total == 0:
        return float("nan")
    return 2.0 * int(np.logical_and(pred, gt).sum()) / total


def normalized_surface_dice(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float] | None = None,
    tolerance: float = CHALLENGE_TOLERANCE_MM,
) -> float:
    """Normalised surface Dice of two same-shape masks at ``tolerance`` (spacing units).

    ``pred``, ``gt``: (H, W) or (D, H, W), nonzero = foreground. ``spacing``: one value per
    array axis (``None``: 1 per axis); a 2D pair is scored as a slab of unit thickness. A
    surface element counts when its distance to the other surface is ``<= tolerance``.
    Returns NaN when both masks are empty, 0 when exactly one is.
    """
    pred_volume, spacing3 = _as_volume(pred, spacing)
    gt_volume, _ = _as_volume(gt, spacing)
    _check_same_shape(pred_volume, gt_volume)
    union = pred_volume | gt_volume
    if not union.any():
        return float("nan")
    # Distances only involve surface corners, which all lie in the union's bounding box.
    crop = tuple(slice(idx.min(), idx.max() + 1) for idx in np.nonzero(union))
    area_of_code = surface_area_per_code(spacing3)

    codes_gt = _neighbour_codes(gt_volume[crop])
    codes_pred = _neighbour_codes(pred_volume[crop])
    border_gt = (codes_gt != 0) & (codes_gt != 255)
    border_pred = (codes_pred != 0) & (codes_pred != 255)
    area_gt = area_of_code[codes_gt[border_gt]]
    area_pred = area_of_code[codes_pred[border_pred]]
    gt_to_pred = _distance_to_surface(border_pred, spacing3)[border_gt]
    pred_to_gt = _distance_to_surface(border_gt, spacing3)[border_pred]

    within = area_gt[gt_to_pred <= tolerance].sum() + area_pred[pred_to_gt <= tolerance].sum()
    return float(within / (area_gt.sum() + area_pred.sum()))


def case_scores(
    segs: np.ndarray,
    gts: np.ndarray,
    spacing: Sequence[float] | None = None,
    tolerance: float = CHALLENGE_TOLERANCE_MM,
) -> dict:
    """Challenge scores of one case: label maps ``segs`` (prediction) and ``gts``.

    ``segs``, ``gts``: same shape, (H, W) or (D, H, W), integer labels, 0 = background.
    ``spacing``: one value per array axis (mm for 3D); ``None`` scores in pixels/voxels.
    Returns ``{"dsc": float, "nsd": float, "per_label": {label: {"dsc": .., "nsd": ..}}}``
    where the case values are the means over labels ``1 .. gts.max()`` and NSD follows the
    0.2 rule (see the module docstring); per-label NSD is 0 where the rule skipped it.
    """
    segs, gts = np.asarray(segs), np.asarray(gts)
    _check_same_shape(segs, gts)
    if segs.ndim not in (2, 3):
        raise ValueError(f"label maps must be (H, W) or (D, H, W); got shape {segs.shape}")
    _validated_spacing(spacing, gts.ndim)
    labels = range(1, int(gts.max()) + 1) if gts.size else range(0)
    label_dsc = {label: dice(segs == label, gts == label) for label in labels}
    case_dsc = float(np.mean(list(label_dsc.values()))) if label_dsc else float("nan")

    if case_dsc > NSD_MIN_CASE_DSC:
        label_nsd = {
            label: normalized_surface_dice(segs == label, gts == label, spacing, tolerance)
            for label in labels
        }
        case_nsd = float(np.mean(list(label_nsd.values())))
    else:
        label_nsd = {label: 0.0 for label in labels}
        case_nsd = 0.0
    per_label = {label: {"dsc": label_dsc[label], "nsd": label_nsd[label]} for label in labels}
    return {"dsc": case_dsc, "nsd": case_nsd, "per_label": per_label}


def _check_same_shape(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"prediction and ground truth must have the same shape; got {a.shape} and {b.shape}"
        )
