"""The semantic map and object table of one labelled image, written beside its instance map.

For an instance map saved as ``<base><suffix>`` (see ``io.label_files``), this writes
``<base>_semantic<suffix>`` (class ids, same format) and ``<base>_objects.csv`` (one row per
object, see ``io.object_exports``), and reads the classes back from the table.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from napari_swinlitemedsam.annotation.class_list import ClassList
from napari_swinlitemedsam.annotation.object_classes import ObjectClasses, classes_from_table
from napari_swinlitemedsam.annotation.object_table import ids_without_rows, object_table
from napari_swinlitemedsam.io.image_files import LoadedImage
from napari_swinlitemedsam.io.label_files import LABEL_FORMATS, save_labels
from napari_swinlitemedsam.io.object_exports import (
    load_object_table,
    save_object_table,
    semantic_labels,
    semantic_path,
    table_path,
    table_text,
)

NIFTI_UNITS = {"mm": "mm", "micron": "µm", "meter": "m"}


def image_length_unit(image: LoadedImage | None) -> str | None:
    """The length unit of ``image.spacing``: a NIfTI header's spatial unit (``"mm"`` when it
    says none, NIfTI's usual meaning), ``"mm"`` for other medical volumes (DICOM, NRRD, MHA
    geometry is in mm), else None (unknown)."""
    if image is None:
        return None
    if image.header is not None and hasattr(image.header, "get_xyzt_units"):
        return NIFTI_UNITS.get(image.header.get_xyzt_units()[0], "mm")
    return "mm" if getattr(image, "geometry", None) is not None else None


def table_records(
    labels: np.ndarray,
    objects: ObjectClasses | None,
    class_list: ClassList | None,
    spacing: Sequence[float] | None = None,
    unit: str | None = None,
) -> list[dict[str, object]]:
    """The CSV rows of ``labels``' objects (see ``object_table``)."""
    rows = object_table(labels, objects, class_list, spacing, unit)
    return [row.as_record() for row in rows]


def exports_digest(records: list[dict[str, object]]) -> str:
    """sha256 of the object table's text: it changes with any class, count or volume."""
    return hashlib.sha256(table_text(records).encode("utf-8")).hexdigest()


def write_item_exports(
    base: str | os.PathLike,
    labels: np.ndarray,
    label_format: str,
    records: list[dict[str, object]],
    image: LoadedImage | None = None,
) -> tuple[Path, Path]:
    """Write the semantic map and the object table of ``labels`` ((H, W) / (D, H, W) ids).

    ``records``: from :func:`table_records`. Each file is written atomically. Returns
    ``(semantic map path, table path)``.
    """
    class_of = {int(r["object_id"]): int(r["class_id"]) for r in records}  # type: ignore[call-overload]
    semantic = semantic_labels(labels, class_of)
    semantic_file = semantic_path(base, LABEL_FORMATS[label_format])
    save_labels(semantic_file, semantic, label_format, image)
    table_file = save_object_table(table_path(base), records)
    return semantic_file, table_file


def read_item_classes(
    base: str | os.PathLike, labels: np.ndarray, class_list: ClassList
) -> tuple[ObjectClasses, list[str]]:
    """The object classes saved with the instance map ``labels`` of ``<base>``, and messages
    for the user (no table, classes missing from ``class_list``, ids the table does not list).

    Nothing is dropped: objects the table does not describe stay in the labels, unclassified.
    """
    path = table_path(base)
    if not path.is_file():
        if np.any(labels):
            return ObjectClasses(), [f"{path.name} is missing: all objects are unclassified"]
        return ObjectClasses(), []
    rows = load_object_table(path)
    objects, messages = classes_from_table(rows, class_list.ids())
    missing = ids_without_rows(labels, [int(r["object_id"]) for r in rows])  # type: ignore[call-overload]
    if missing:
        messages.append(
            f"objects {missing[:20]}{' ...' if len(missing) > 20 else ''} are in the label map "
            f"but not in {path.name}; they are kept, unclassified"
        )
    present = set(np.unique(np.asarray(labels)).tolist())
    return objects.restricted_to(present), messages
