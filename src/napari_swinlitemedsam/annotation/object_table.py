"""One row per object of a label map: class, slices spanned, voxel count, physical volume.

The table is computed from the label array itself (never from bookkeeping alone), so painted
objects and ids of a loaded label file appear too. Bounding boxes come from
``scipy.ndimage.find_objects`` (one pass, no copy); voxels are counted inside each box (or, when
boxes overlap a lot, by a chunked ``np.bincount``). Label maps with very large sparse ids are
first renumbered with ``np.unique`` so the work stays proportional to the number of voxels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from napari_swinlitemedsam.annotation.class_list import ClassList
from napari_swinlitemedsam.annotation.object_classes import ObjectClasses

_SPARSE_FACTOR = 4
"""Renumber ids first when the highest id exceeds this many times the voxel count."""

CUBED = {"mm": "mm³", "millimeter": "mm³", "µm": "µm³", "um": "µm³", "micrometer": "µm³"}


@dataclass(frozen=True)
class ObjectRow:
    """One object of a label map.

    ``first_slice``/``last_slice``/``middle_slice``: the stack slices (axis 0 of (D, H, W)) it
    spans; None for a 2D map. ``bounds``: ``(start, stop)`` per axis of its bounding box.
    ``volume``: ``voxel_count`` times the voxel volume (area for a 2D map), in ``unit``.
    """

    object_id: int
    class_id: int
    class_name: str
    first_slice: int | None
    last_slice: int | None
    voxel_count: int
    volume: float
    unit: str
    provenance: str
    bounds: tuple[tuple[int, int], ...]

    @property
    def middle_slice(self) -> int | None:
        if self.first_slice is None or self.last_slice is None:
            return None
        return (self.first_slice + self.last_slice) // 2

    def as_record(self) -> dict[str, object]:
        """The row as the CSV export writes it (``io.object_exports.OBJECT_TABLE_COLUMNS``)."""
        return {
            "object_id": self.object_id,
            "class_id": self.class_id,
            "class_name": self.class_name,
            "first_slice": "" if self.first_slice is None else self.first_slice,
            "last_slice": "" if self.last_slice is None else self.last_slice,
            "voxel_count": self.voxel_count,
            "volume": f"{self.volume:.6g}",
            "volume_unit": self.unit,
            "provenance": self.provenance,
        }


def volume_unit(unit: str | None, ndim: int, scaled: bool = True) -> str:
    """The unit of a voxel's volume (``"mm"`` -> ``"mm³"``, 2D: ``"mm²"``). Unscaled maps count
    ``"voxel"``/``"pixel"``; scaled ones without a named length unit say ``"unit³"`` (the unit of
    the spacing, whatever it is)."""
    if not scaled:
        return "voxel" if ndim == 3 else "pixel"
    if not unit or unit in ("pixel", "px"):
        unit = "unit"
    cubed = CUBED.get(str(unit), f"{unit}³")
    return cubed if ndim == 3 else cubed.replace("³", "²")


def voxel_size(spacing: Sequence[float] | None, ndim: int) -> float:
    """The volume (area in 2D) of one voxel: the product of the last ``ndim`` spacings."""
    if spacing is None:
        return 1.0
    values = [float(s) for s in spacing][-ndim:]
    if len(values) != ndim or any(not np.isfinite(v) or v <= 0 for v in values):
        raise ValueError(f"spacing {tuple(spacing)} does not give {ndim} positive sizes")
    return float(np.prod(values))


def object_table(
    labels: np.ndarray,
    object_classes: ObjectClasses | None = None,
    class_list: ClassList | None = None,
    spacing: Sequence[float] | None = None,
    unit: str | None = None,
) -> list[ObjectRow]:
    """The objects of ``labels`` ((H, W) or (D, H, W) integers, 0 = background), by id.

    ``spacing``: the size of a voxel along each axis in the array's order (a napari layer's
    ``scale``), in ``unit`` (e.g. ``"mm"``); volumes are voxel counts when it is None.
    """
    # Masks on disk (a zarr store) are read one slice at a time; arrays in memory as they are.
    on_disk = not isinstance(labels, np.ndarray) and len(labels.shape) == 3
    array = labels if on_disk else np.asarray(labels)
    if array.ndim not in (2, 3):
        raise ValueError(f"labels must be (H, W) or (D, H, W), got shape {array.shape}")
    if array.dtype.kind not in "iub":
        raise ValueError(f"labels must be integers, got dtype {array.dtype}")
    object_classes = object_classes or ObjectClasses()
    class_list = class_list or ClassList()
    per_voxel = voxel_size(spacing, array.ndim)
    unit_text = volume_unit(unit, array.ndim, scaled=spacing is not None)
    ids, counts, boxes = _count_and_bound_by_slice(array) if on_disk else _count_and_bound(array)
    rows = []
    for object_id, count, box in zip(ids, counts, boxes):
        class_id = object_classes.class_of(object_id)
        provenance = object_classes.provenance_of(object_id)
        bounds = tuple((int(s.start), int(s.stop)) for s in box)
        first, last = (bounds[0][0], bounds[0][1] - 1) if array.ndim == 3 else (None, None)
        rows.append(
            ObjectRow(
                object_id=int(object_id),
                class_id=class_id,
                class_name=class_list.name_of(class_id),
                first_slice=first,
                last_slice=last,
                voxel_count=int(count),
                volume=int(count) * per_voxel,
                unit=unit_text,
                provenance="" if provenance is None else provenance.value,
                bounds=bounds,
            )
        )
    return rows


def _count_and_bound(array: np.ndarray) -> tuple[list[int], list[int], list[tuple[slice, ...]]]:
    """Ids present (ascending, without 0), their voxel counts and bounding boxes."""
    if array.size == 0:
        return [], [], []
    if array.dtype.kind == "i" and int(array.min()) < 0:
        raise ValueError("labels must not be negative")
    highest = int(array.max())
    if highest == 0:
        return [], [], []
    if highest > _SPARSE_FACTOR * array.size:
        values, compact = np.unique(array, return_inverse=True)
        compact = compact.reshape(array.shape)
        if values[0] != 0:  # no background: shift so that every id is a label
            values = np.concatenate([[0], values])
            compact = compact + 1
    else:
        # bincount and find_objects take uint8..uint32 / signed ids as they are (no copy).
        safe = array.dtype.kind in "iu" and array.dtype != np.uint64
        values, compact = None, array if safe else array.astype(np.intp)
    boxes = ndimage.find_objects(compact)  # one pass in C, no copy of the map
    present = [(index, box) for index, box in enumerate(boxes, start=1) if box is not None]
    box_voxels = sum(int(np.prod([s.stop - s.start for s in box])) for _, box in present)
    if box_voxels <= _SPARSE_FACTOR * compact.size:  # compact objects: count inside each box
        counts = [int(np.count_nonzero(compact[box] == index)) for index, box in present]
    else:  # boxes overlap a lot (long thin objects): one chunked bincount, bounded memory
        histogram = _chunked_bincount(compact, len(boxes) + 1)
        counts = [int(histogram[index]) for index, _ in present]
    ids = [int(values[index]) if values is not None else index for index, _ in present]
    return ids, counts, [box for _, box in present]


def _count_and_bound_by_slice(data) -> tuple[list[int], list[int], list[tuple[slice, ...]]]:
    """:func:`_count_and_bound` of a (D, H, W) array-like read one slice at a time (memory of
    one slice): per-slice counts summed, per-slice boxes joined."""
    counts: dict[int, int] = {}
    extents: dict[int, list[int]] = {}  # z0, z1, row0, row1, col0, col1
    for z in range(data.shape[0]):
        for object_id, count, (rows, cols) in zip(*_count_and_bound(np.asarray(data[z]))):
            counts[object_id] = counts.get(object_id, 0) + count
            seen = extents.get(object_id)
            if seen is None:
                extents[object_id] = [z, z + 1, rows.start, rows.stop, cols.start, cols.stop]
                continue
            seen[1] = z + 1
            seen[2], seen[3] = min(seen[2], rows.start), max(seen[3], rows.stop)
            seen[4], seen[5] = min(seen[4], cols.start), max(seen[5], cols.stop)
    ids = sorted(counts)
    boxes = [tuple(slice(extents[i][k], extents[i][k + 1]) for k in (0, 2, 4)) for i in ids]
    return ids, [counts[i] for i in ids], boxes


def ids_present(labels) -> set[int]:
    """The non-zero ids of ``labels`` (numpy, or a (D, H, W) zarr store read slice by slice)."""
    if isinstance(labels, np.ndarray) or len(labels.shape) != 3:
        return {int(i) for i in np.unique(np.asarray(labels)) if i}
    return {int(i) for z in range(labels.shape[0]) for i in np.unique(labels[z]) if i}


def _chunked_bincount(array: np.ndarray, length: int, chunk_voxels: int = 1 << 22) -> np.ndarray:
    """``np.bincount(array.ravel(), minlength=length)`` without converting the whole map to
    intp at once (8 bytes per voxel)."""
    flat = array.reshape(-1)
    total = np.zeros(length, dtype=np.int64)
    for start in range(0, flat.size, chunk_voxels):
        total += np.bincount(flat[start : start + chunk_voxels], minlength=length)
    return total


def ids_without_rows(labels: np.ndarray, table_ids: Sequence[int]) -> list[int]:
    """Ids in ``labels`` that a saved table does not list (their class is unknown)."""
    present = np.unique(np.asarray(labels))
    listed = set(int(i) for i in table_ids)
    return [int(i) for i in present if i != 0 and int(i) not in listed]
