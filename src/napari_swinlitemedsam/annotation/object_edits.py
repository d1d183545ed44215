"""Delete, merge and split objects of a label map, as pure functions returning the change.

Each function reads the label array and returns a :class:`LabelEdit`: the coordinates of the
voxels that change and their new values. It never writes the array, and the coordinates only
ever hold voxels of the objects named in the call, so other objects' pixels (painted or not)
cannot change. The widget applies an edit with ``Labels.data_setitem(edit.indices,
edit.values)``, which puts it on the layer's undo stack; :meth:`LabelEdit.apply_to` does the
same on a plain array (tests, scripts).

Changing an object's class does not change the instance map: see
``ObjectClasses.assign``; the semantic map follows at export.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


class ObjectEditError(ValueError):
    """The edit cannot be made as asked; the message says why."""


@dataclass(frozen=True)
class LabelEdit:
    """``indices``: one int array per axis (as ``np.nonzero`` gives); ``values``: the new label of
    each of those voxels, same length."""

    indices: tuple[np.ndarray, ...]
    values: np.ndarray

    @property
    def size(self) -> int:
        return int(self.values.size)

    def apply_to(self, labels: np.ndarray) -> None:
        """Write the edit into ``labels`` in place."""
        labels[self.indices] = self.values


def _voxels_of(labels: np.ndarray, object_id: int) -> tuple[np.ndarray, ...]:
    if object_id <= 0:
        raise ObjectEditError(f"{object_id} is not an object id (ids start at 1)")
    if isinstance(labels, np.ndarray) or labels.ndim != 3:
        indices = np.nonzero(np.asarray(labels) == object_id)
    else:  # masks on disk (a zarr store): searched one slice at a time
        found = [
            (np.full(rows.size, z, dtype=np.intp), rows, cols)
            for z in range(labels.shape[0])
            for rows, cols in [np.nonzero(np.asarray(labels[z]) == object_id)]
            if rows.size
        ]
        indices = tuple(np.concatenate(axis) for axis in zip(*found)) if found else (np.zeros(0),)
    if indices[0].size == 0:
        raise ObjectEditError(f"object {object_id} has no pixels in this label map")
    return indices


def delete_object(labels: np.ndarray, object_id: int) -> LabelEdit:
    """Every voxel of ``object_id`` back to background (0)."""
    indices = _voxels_of(labels, object_id)
    return LabelEdit(indices, np.zeros(indices[0].size, dtype=labels.dtype))


def merge_objects(labels: np.ndarray, keep: int, absorbed: int) -> LabelEdit:
    """Every voxel of ``absorbed`` becomes ``keep``."""
    if keep == absorbed:
        raise ObjectEditError(f"pick two different objects to merge (both are {keep})")
    _voxels_of(labels, keep)  # both must exist: merging into nothing is a mistake
    indices = _voxels_of(labels, absorbed)
    return LabelEdit(indices, np.full(indices[0].size, keep, dtype=labels.dtype))


def split_component(
    labels: np.ndarray,
    object_id: int,
    new_id: int,
    at: tuple[int, ...] | None = None,
) -> LabelEdit:
    """One connected component of ``object_id`` becomes the new object ``new_id``.

    ``at``: a voxel (array index, e.g. ``(z, y, x)``) of the component to split off; without it,
    the largest component other than the biggest one (the biggest stays ``object_id``).
    Components touch by faces (6-connectivity in 3D, 4 in 2D), as painted strokes usually do.
    Raises ObjectEditError when the object is one piece, ``at`` is not on it, or ``new_id`` is
    already used.
    """
    if new_id <= 0 or np.any(labels == new_id):
        raise ObjectEditError(f"new id {new_id} is not free; pick an id not in the label map")
    if labels.dtype.kind in "iu" and new_id > np.iinfo(labels.dtype).max:
        raise ObjectEditError(
            f"id {new_id} does not fit the label layer's {labels.dtype} values; convert the "
            "layer to a wider integer type first"
        )
    indices = _voxels_of(labels, object_id)
    lower = [int(axis.min()) for axis in indices]
    upper = [int(axis.max()) + 1 for axis in indices]
    crop = tuple(slice(lo, hi) for lo, hi in zip(lower, upper))
    components, count = ndimage.label(labels[crop] == object_id)
    if count < 2:
        raise ObjectEditError(
            f"object {object_id} is a single piece: there is nothing to split off"
        )
    if at is not None:
        if len(at) != labels.ndim:
            raise ObjectEditError(f"the point {tuple(at)} needs {labels.ndim} coordinates")
        local = tuple(int(a) - lo for a, lo in zip(at, lower))
        inside = all(0 <= v < hi - lo for v, lo, hi in zip(local, lower, upper))
        chosen = int(components[local]) if inside else 0
        if chosen == 0:
            raise ObjectEditError(f"the point {tuple(at)} is not on object {object_id}")
    else:
        sizes = np.bincount(components.ravel())[1:]
        order = np.argsort(sizes, kind="stable")[::-1]
        chosen = int(order[1]) + 1
    local_indices = np.nonzero(components == chosen)
    moved = tuple(axis + lo for axis, lo in zip(local_indices, lower))
    return LabelEdit(moved, np.full(moved[0].size, new_id, dtype=labels.dtype))


def component_count(labels: np.ndarray, object_id: int) -> int:
    """How many face-connected pieces ``object_id`` has (0 when it is absent)."""
    indices = np.nonzero(labels == object_id)
    if indices[0].size == 0:
        return 0
    crop = tuple(slice(int(a.min()), int(a.max()) + 1) for a in indices)
    return int(ndimage.label(labels[crop] == object_id)[1])
