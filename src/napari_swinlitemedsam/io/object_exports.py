"""Semantic maps and object tables: what a labelled image exports besides its instance map.

* the **instance map**: one id per object (``label_files.save_labels``, unchanged);
* the **semantic map**: each voxel holds its object's class id (0: background or no class),
  same shape and format as the instance map, ``<base>_semantic<suffix>``;
* the **object table**: a CSV with one row per object (:data:`OBJECT_TABLE_COLUMNS`),
  ``<base>_objects.csv``. Reading an instance map together with its table gives the classes
  back.

Plain mappings only: this layer does not know the annotation bookkeeping that fills them.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from napari_swinlitemedsam.storage.atomic_files import write_atomically

OBJECT_TABLE_COLUMNS = (
    "object_id",
    "class_id",
    "class_name",
    "first_slice",
    "last_slice",
    "voxel_count",
    "volume",
    "volume_unit",
    "provenance",
)
SEMANTIC_TAG = "_semantic"
TABLE_TAG = "_objects.csv"


class ObjectTableError(ValueError):
    """An object table cannot be written or read; the message says what is wrong."""


def semantic_path(base: str | os.PathLike, suffix: str) -> Path:
    """``<base>_semantic<suffix>`` (``base``: the instance map's path without its suffix)."""
    return Path(f"{os.fspath(base)}{SEMANTIC_TAG}{suffix}")


def table_path(base: str | os.PathLike) -> Path:
    """``<base>_objects.csv``."""
    return Path(f"{os.fspath(base)}{TABLE_TAG}")


def semantic_labels(instances: np.ndarray, class_of: Mapping[int, int]) -> np.ndarray:
    """The semantic map of ``instances`` ((H, W) / (D, H, W) object ids): each voxel gets
    ``class_of[its id]``; ids not in ``class_of`` (unclassified) and 0 give 0.

    Returned in the smallest unsigned dtype holding the class ids (uint8 / uint16).
    """
    array = np.asarray(instances)
    highest_class = max((int(c) for c in class_of.values()), default=0)
    dtype = np.uint8 if highest_class <= np.iinfo(np.uint8).max else np.uint16
    if highest_class > np.iinfo(np.uint16).max:
        raise ObjectTableError(f"class id {highest_class} is above 65535; renumber the classes")
    if array.size == 0:
        return np.zeros(array.shape, dtype=dtype)
    highest_id = int(array.max())
    if highest_id <= 4 * array.size:  # one table lookup per voxel
        table = np.zeros(highest_id + 1, dtype=dtype)
        for object_id, class_id in class_of.items():
            if 0 < int(object_id) <= highest_id:
                table[int(object_id)] = int(class_id)
        return table[array]
    result = np.zeros(array.shape, dtype=dtype)  # huge sparse ids: one pass per object
    for object_id, class_id in class_of.items():
        if int(class_id) and int(object_id) > 0:
            result[array == int(object_id)] = int(class_id)
    return result


def table_text(rows: Iterable[Mapping[str, object]]) -> str:
    """``rows`` (mappings with :data:`OBJECT_TABLE_COLUMNS`) as CSV text with a header."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=OBJECT_TABLE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        missing = [c for c in ("object_id", "class_id") if c not in row]
        if missing:
            raise ObjectTableError(f"an object table row lacks {missing}: {dict(row)}")
        writer.writerow({column: row.get(column, "") for column in OBJECT_TABLE_COLUMNS})
    return buffer.getvalue()


def save_object_table(path: str | os.PathLike, rows: Iterable[Mapping[str, object]]) -> Path:
    """Write the object table CSV atomically; returns ``path``."""
    data = table_text(rows).encode("utf-8")
    return write_atomically(path, lambda stream: stream.write(data))


def load_object_table(path: str | os.PathLike) -> list[dict[str, object]]:
    """Rows of an object table CSV, ``object_id``/``class_id``/``voxel_count`` as ints.

    Raises ObjectTableError (naming the file and line) for a missing ``object_id`` or
    ``class_id`` column, a non-integer id, or an object listed twice.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError) as error:
        raise ObjectTableError(f"{path}: cannot read the object table ({error})") from None
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    for column in ("object_id", "class_id"):
        if column not in header:
            raise ObjectTableError(f"{path}: no {column!r} column (the header is {header})")
    rows, seen = [], set()
    for line, raw in enumerate(reader, start=2):
        row: dict[str, object] = dict(raw)
        for column in ("object_id", "class_id", "voxel_count"):
            value = (raw.get(column) or "").strip()
            if column == "voxel_count" and not value:
                continue
            try:
                row[column] = int(value or 0) if column == "class_id" else int(value)
            except ValueError:
                raise ObjectTableError(
                    f"{path}, line {line}: {column} {value!r} is not a whole number"
                ) from None
        if row["object_id"] in seen:
            raise ObjectTableError(
                f"{path}, line {line}: object {row['object_id']} is listed twice; keep one row"
            )
        seen.add(row["object_id"])
        rows.append(row)
    return rows
