"""Scanner geometry of a volume and the one display orientation every medical reader returns.

World frame: DICOM's patient frame **LPS** (x grows to the patient's Left, y to Posterior, z to
Superior), in millimetres. NIfTI affines (RAS) are converted on reading and back on writing.

Display orientation (:data:`DISPLAY_ORIENTATION`): a ``(D, H, W)`` array of axial slices,

* slice index ``D`` grows from inferior to superior (feet to head),
* row index ``H`` grows from anterior to posterior (the face at the top of the screen),
* column index ``W`` grows from the patient's right to the patient's left, so the patient's left
  is on the right of the screen and the patient's right on the left (the radiological convention
  of PACS viewers and 3D Slicer's axial view).

Only axis permutations and flips take a source array there: no voxel is resampled. For an
oblique acquisition each array axis goes to the nearest world axis; the exact (rotated)
geometry stays in :attr:`VolumeGeometry.source_affine`, and labels go back through the exact
inverse permutation and flips, so they land on the source's voxels one for one.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

DISPLAY_ORIENTATION = (
    "axial slices (D, H, W): slices inferior to superior, rows anterior to posterior, columns "
    "from the patient's right to the patient's left (patient left on screen right)"
)
DISPLAY_AXIS_NAMES = ("inferior-superior", "anterior-posterior", "right-left")
# World axis (LPS index) shown along each display axis (D, H, W): S, P, L.
_WORLD_AXIS_OF_DISPLAY = (2, 1, 0)
RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


class GeometryError(ValueError):
    """A voxel-to-world matrix cannot be used (singular, not 3D)."""


@dataclass(frozen=True)
class VolumeGeometry:
    """Where a volume's voxels are in the patient, and how its source array maps to display.

    Attributes:
        source_format: ``"nifti"``, ``"dicom"``, ``"nrrd"``, ``"mha"`` or ``"mhd"``.
        source_shape: shape of the array as the source stores it, indexed ``(i, j, k)`` (NIfTI
            and ITK's x, y, z; for DICOM: column, row, slice in position order).
        source_affine: (4, 4) LPS millimetres of source voxel ``(i, j, k)``.
        axes: for each display axis ``(D, H, W)``, the source axis shown along it.
        flips: for each display axis, whether the source axis runs against it.
        extra: what a writer needs to restore the source exactly (NIfTI header, ...).
    """

    source_format: str
    source_shape: tuple[int, int, int]
    source_affine: np.ndarray
    axes: tuple[int, int, int]
    flips: tuple[bool, bool, bool]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def display_shape(self) -> tuple[int, int, int]:
        return tuple(self.source_shape[axis] for axis in self.axes)

    @property
    def display_affine(self) -> np.ndarray:
        """(4, 4) LPS millimetres of display voxel ``(d, h, w)``."""
        index_map = np.zeros((4, 4))
        index_map[3, 3] = 1.0
        for display_axis, (source_axis, flipped) in enumerate(zip(self.axes, self.flips)):
            if flipped:
                index_map[source_axis, display_axis] = -1.0
                index_map[source_axis, 3] = self.source_shape[source_axis] - 1
            else:
                index_map[source_axis, display_axis] = 1.0
        return self.source_affine @ index_map

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the display axes ``(D, H, W)``."""
        columns = np.linalg.norm(self.source_affine[:3, :3], axis=0)
        return tuple(float(columns[axis]) for axis in self.axes)

    @property
    def origin(self) -> tuple[float, float, float]:
        """LPS position (mm) of display voxel ``(0, 0, 0)``."""
        return tuple(float(v) for v in self.display_affine[:3, 3])

    @property
    def layer_translate(self) -> tuple[float, float, float]:
        """Display voxel ``(0, 0, 0)`` in the display axes' world coordinates (S, P, L) mm."""
        origin = self.origin
        return tuple(origin[world] for world in _WORLD_AXIS_OF_DISPLAY)

    @property
    def is_oblique(self) -> bool:
        """Whether the source axes are rotated away from the patient axes (beyond 1e-4)."""
        directions = self.source_affine[:3, :3] / np.linalg.norm(self.source_affine[:3, :3], axis=0)
        return bool(np.abs(np.abs(directions).max(axis=0) - 1.0).max() > 1e-4)

    def to_display(self, source_array: np.ndarray) -> np.ndarray:
        """The source array ``(i, j, k)`` as a display array ``(D, H, W)`` (a view)."""
        array = np.transpose(source_array, self.axes)
        flipped = tuple(axis for axis, flip in enumerate(self.flips) if flip)
        return np.flip(array, flipped) if flipped else array

    def to_source(self, display_array: np.ndarray) -> np.ndarray:
        """A display array ``(D, H, W)`` back in the source's ``(i, j, k)`` order (a view)."""
        if tuple(display_array.shape) != self.display_shape:
            raise GeometryError(
                f"labels of shape {tuple(display_array.shape)} do not fit the image "
                f"{self.display_shape}"
            )
        flipped = tuple(axis for axis, flip in enumerate(self.flips) if flip)
        array = np.flip(display_array, flipped) if flipped else display_array
        return np.transpose(array, np.argsort(self.axes))

    def layer_metadata(self) -> dict:
        """Plain-data summary for a napari layer's ``metadata`` (``geometry`` keeps the object)."""
        return {
            "source_format": self.source_format,
            "orientation": DISPLAY_ORIENTATION,
            "spacing_mm": self.spacing,
            "origin_lps_mm": self.origin,
            "source_affine_lps": self.source_affine.tolist(),
            "display_affine_lps": self.display_affine.tolist(),
            "geometry": self,
        }


def display_geometry(
    source_format: str,
    source_shape: tuple[int, ...],
    source_affine_lps: np.ndarray,
    extra: dict | None = None,
) -> VolumeGeometry:
    """The :class:`VolumeGeometry` taking a 3D source array to the display orientation.

    ``source_affine_lps``: (4, 4) LPS millimetres of source voxel ``(i, j, k)``. Each display
    axis gets the source axis whose direction is nearest to its world axis (the permutation
    with the largest total alignment, so a 45-degree tie still gives a valid one).
    """
    affine = np.asarray(source_affine_lps, dtype=float)
    if affine.shape != (4, 4) or len(source_shape) != 3:
        raise GeometryError(f"need a 3D shape and a (4, 4) affine, got {source_shape}")
    linear = affine[:3, :3]
    norms = np.linalg.norm(linear, axis=0)
    if np.any(norms <= 0) or abs(np.linalg.det(linear)) < 1e-12 * np.prod(norms):
        raise GeometryError("the voxel-to-world matrix is singular (zero or parallel axes)")
    cosines = linear / norms  # cosines[world, source]
    best = max(
        itertools.permutations(range(3)),
        key=lambda perm: sum(
            abs(cosines[world, perm[d]]) for d, world in enumerate(_WORLD_AXIS_OF_DISPLAY)
        ),
    )
    flips = tuple(
        bool(cosines[world, best[d]] < 0) for d, world in enumerate(_WORLD_AXIS_OF_DISPLAY)
    )
    return VolumeGeometry(
        source_format,
        tuple(int(s) for s in source_shape),
        affine,
        tuple(int(a) for a in best),
        flips,
        dict(extra or {}),
    )
