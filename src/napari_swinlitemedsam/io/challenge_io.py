"""Reading and writing cases in the challenge ``.npz`` format.

Input case (``load_case``):

* ``imgs``: 2D ``(H, W, 3)`` or ``(H, W)``; 3D ``(D, H, W)`` indexed ``[z, y, x]``. Numeric.
* ``boxes``: 2D ``(N, 4)`` ``[x_min, y_min, x_max, y_max]``; 3D ``(N, 6)``
  ``[x_min, y_min, z_min, x_max, y_max, z_max]``; inclusive pixel coordinates, N may be 0.
* optional ``gts`` (label map with the image's spatial shape) and ``spacing`` (one value
  per axis, as stored).

A file name starting with ``3D`` is a 3D case, one starting with ``2D`` a 2D case; otherwise
the array ranks decide. Files are opened with ``allow_pickle=False``.

Prediction (``save_segs``): one array ``segs``, the label map (0 = background, k = k-th box),
written atomically.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

from napari_swinlitemedsam.storage.atomic_files import fsync_folder


class ChallengeFileError(ValueError):
    """A challenge ``.npz`` file is missing, unreadable, or does not hold a valid case."""


class SegmentationWriteError(OSError):
    """A segmentation could not be written (for example, the output folder is read-only)."""


@dataclass(frozen=True)
class ChallengeCase:
    """One validated challenge case.

    ``name``: file name without ``.npz``. ``imgs``: (H, W, 3) / (H, W) for 2D, (D, H, W)
    for 3D, dtype as stored. ``boxes``: (N, 4) xyxy (2D) or (N, 6) xyzxyz (3D), inclusive,
    dtype as stored (int64 when empty). ``spacing``: float64 (n,) as stored, or None.
    ``gts``: label map (H, W) / (D, H, W), or None. ``is_3d``: which of the two layouts.
    """

    name: str
    imgs: np.ndarray
    boxes: np.ndarray
    spacing: np.ndarray | None
    gts: np.ndarray | None
    is_3d: bool


def read_npz_arrays(
    path: str | os.PathLike, required: Iterable[str], optional: Iterable[str] = ()
) -> dict[str, np.ndarray]:
    """Read the named arrays of an ``.npz`` file without unpickling anything.

    Returns ``{key: array}`` for every ``required`` key and for the ``optional`` keys that
    are present. Raises ``ChallengeFileError`` naming the file and the problem: missing
    file, not an npz archive, truncated or corrupt data, pickled (object) arrays, or a
    missing key (listing the keys the file does have).
    """
    path = Path(path)
    if not path.exists():
        raise ChallengeFileError(f"{path}: file does not exist")
    if not path.is_file():
        raise ChallengeFileError(f"{path}: is not a file (expected a .npz archive)")
    _check_signature(path)
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ChallengeFileError(f"{path}: is a single .npy array, not a .npz archive")
        with loaded as archive:
            present = list(archive.files)
            missing = [key for key in required if key not in present]
            if missing:
                raise ChallengeFileError(
                    f"{path}: missing array(s) {missing}; the file holds {present or 'no arrays'}"
                )
            wanted = list(required) + [key for key in optional if key in present]
            return {key: _read_member(archive, key, path) for key in wanted}
    except ChallengeFileError:
        raise
    except MemoryError as error:
        raise ChallengeFileError(f"{path}: an array is too large to load ({error})") from error
    except Exception as error:  # zipfile, zlib, numpy header and EOF errors all land here
        raise ChallengeFileError(
            f"{path}: not a readable .npz archive (truncated or corrupt?): "
            f"{type(error).__name__}: {error}"
        ) from error


def _check_signature(path: Path) -> None:
    """Reject empty files, bare .npy files and non-zip files before numpy guesses a format."""
    try:
        with open(path, "rb") as stream:
            start = stream.read(len(npy_format.MAGIC_PREFIX))
    except OSError as error:
        raise ChallengeFileError(f"{path}: cannot be read ({error.strerror or error})") from error
    if not start:
        raise ChallengeFileError(f"{path}: the file is empty")
    if start == npy_format.MAGIC_PREFIX:
        raise ChallengeFileError(f"{path}: is a single .npy array, not a .npz archive")
    if not start.startswith(b"PK"):
        raise ChallengeFileError(
            f"{path}: not a .npz archive (no zip signature at the start of the file)"
        )


def _read_member(archive: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    """Load one array after checking that its header fits the bytes the archive holds."""
    names = archive.zip.namelist()
    member = archive.zip.getinfo(f"{key}.npy" if f"{key}.npy" in names else key)
    with archive.zip.open(member) as stream:
        try:
            version = npy_format.read_magic(stream)
        except ValueError as error:
            raise ChallengeFileError(f"{path}: member '{key}' is not a .npy array") from error
        if version == (1, 0):
            shape, _, dtype = npy_format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, _, dtype = npy_format.read_array_header_2_0(stream)
        else:
            raise ChallengeFileError(
                f"{path}: array '{key}' uses .npy format {version}; store plain numeric arrays"
            )
    if dtype.hasobject:
        raise ChallengeFileError(f"{path}: array '{key}' holds Python objects; store numbers")
    needed = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    if needed > member.file_size:
        raise ChallengeFileError(
            f"{path}: array '{key}' is truncated or corrupt (header says {needed} bytes, "
            f"the archive holds {member.file_size})"
        )
    array = archive[key]
    if not isinstance(array, np.ndarray):
        raise ChallengeFileError(f"{path}: member '{key}' is not a .npy array")
    return array


def load_case(path: str | os.PathLike) -> ChallengeCase:
    """Read and validate one challenge input case (layouts in the module docstring).

    Raises ``ChallengeFileError`` with the file name and what is wrong.
    """
    path = Path(path)
    arrays = read_npz_arrays(path, required=("imgs", "boxes"), optional=("gts", "spacing"))
    imgs, boxes = arrays["imgs"], arrays["boxes"]
    if not _is_real_number_dtype(imgs.dtype):
        raise ChallengeFileError(f"{path}: 'imgs' must be numeric; got dtype {imgs.dtype}")
    if imgs.dtype.kind == "f" and not np.all(np.isfinite(imgs)):
        raise ChallengeFileError(f"{path}: 'imgs' contains NaN or infinite values")
    is_3d = _decide_3d(path, imgs, boxes)
    _check_image_shape(path, imgs, is_3d)
    boxes = _validated_boxes(path, boxes, is_3d)
    spatial_shape = imgs.shape if is_3d else imgs.shape[:2]
    gts = _validated_gts(path, arrays.get("gts"), spatial_shape)
    spacing = _validated_spacing(path, arrays.get("spacing"), is_3d)
    return ChallengeCase(
        name=path.name.removesuffix(".npz"),
        imgs=imgs,
        boxes=boxes,
        spacing=spacing,
        gts=gts,
        is_3d=is_3d,
    )


def _is_real_number_dtype(dtype: np.dtype) -> bool:
    return dtype.kind in "iuf"


def _decide_3d(path: Path, imgs: np.ndarray, boxes: np.ndarray) -> bool:
    """3D when the name starts with '3D', 2D for '2D'; otherwise from box width / image rank."""
    if path.name.startswith("3D"):
        return True
    if path.name.startswith("2D"):
        return False
    if boxes.ndim == 2 and boxes.shape[1] in (4, 6):
        return boxes.shape[1] == 6
    return imgs.ndim == 3 and imgs.shape[-1] != 3


def _check_image_shape(path: Path, imgs: np.ndarray, is_3d: bool) -> None:
    if is_3d:
        if imgs.ndim != 3 or min(imgs.shape) == 0:
            raise ChallengeFileError(
                f"{path}: a 3D case needs 'imgs' of shape (D, H, W); got {imgs.shape}"
            )
        return
    grey = imgs.ndim == 2
    rgb = imgs.ndim == 3 and imgs.shape[2] == 3
    if not (grey or rgb) or min(imgs.shape[:2]) == 0:
        raise ChallengeFileError(
            f"{path}: a 2D case needs 'imgs' of shape (H, W, 3) or (H, W); got {imgs.shape}"
            + (" (name the file '3D...' if it is a volume)" if imgs.ndim == 3 else "")
        )


def _validated_boxes(path: Path, boxes: np.ndarray, is_3d: bool) -> np.ndarray:
    width = 6 if is_3d else 4
    layout = (
        "[x_min, y_min, z_min, x_max, y_max, z_max]" if is_3d else "[x_min, y_min, x_max, y_max]"
    )
    if boxes.size == 0 and boxes.ndim <= 2 and (boxes.ndim < 2 or boxes.shape[1] in (0, width)):
        return np.zeros((0, width), dtype=np.int64)
    if boxes.ndim != 2 or boxes.shape[1] != width:
        raise ChallengeFileError(
            f"{path}: {'3D' if is_3d else '2D'} 'boxes' must have shape (N, {width}) "
            f"{layout}; got {boxes.shape}"
        )
    if not _is_real_number_dtype(boxes.dtype):
        raise ChallengeFileError(f"{path}: 'boxes' must be numbers; got dtype {boxes.dtype}")
    if boxes.dtype.kind == "f" and not np.all(np.isfinite(boxes)):
        bad = np.flatnonzero(~np.all(np.isfinite(boxes), axis=1)).tolist()
        raise ChallengeFileError(f"{path}: box(es) {bad} contain NaN or infinite coordinates")
    half = width // 2
    inverted = np.any(boxes[:, :half] > boxes[:, half:], axis=1)
    if np.any(inverted):
        bad = np.flatnonzero(inverted).tolist()
        raise ChallengeFileError(
            f"{path}: box(es) {bad} have a minimum corner beyond the maximum corner; "
            f"boxes are {layout}"
        )
    return boxes


def _validated_gts(path: Path, gts: np.ndarray | None, spatial_shape: tuple) -> np.ndarray | None:
    if gts is None:
        return None
    if gts.dtype.kind not in "iub":
        raise ChallengeFileError(f"{path}: 'gts' must be integer labels; got dtype {gts.dtype}")
    if gts.shape != tuple(spatial_shape):
        raise ChallengeFileError(
            f"{path}: 'gts' shape {gts.shape} does not match the image shape {tuple(spatial_shape)}"
        )
    return gts


def _validated_spacing(path: Path, spacing: np.ndarray | None, is_3d: bool) -> np.ndarray | None:
    if spacing is None:
        return None
    allowed = (3,) if is_3d else (2, 3)
    if (
        not _is_real_number_dtype(spacing.dtype)
        or spacing.ndim != 1
        or spacing.size not in allowed
        or not np.all(np.isfinite(spacing))
        or np.any(spacing <= 0)
    ):
        raise ChallengeFileError(
            f"{path}: 'spacing' must be {' or '.join(map(str, allowed))} finite positive "
            f"numbers; got {spacing!r}"
        )
    return spacing.astype(np.float64)


def save_segs(
    path: str | os.PathLike,
    segs: np.ndarray,
    *,
    extra: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """Write a label map as a challenge prediction ``.npz`` (key ``segs``), atomically.

    ``segs``: (H, W) or (D, H, W) non-negative integer labels, stored as uint8 when the
    largest label is below 256, else uint16 (labels up to 65535). ``extra``: further numeric
    arrays to store next to ``segs``. The data go to a temporary file in the destination
    folder, are flushed to disk, and replace ``path`` in one step; on any failure ``path``
    keeps its previous content and the temporary file is removed. Missing parent folders
    are created. Returns the written path.
    """
    path = Path(path)
    arrays = {"segs": _segs_for_saving(segs)}
    for key, value in (extra or {}).items():
        arrays[key] = _extra_for_saving(key, value)
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise SegmentationWriteError(
            f"cannot write '{path}': the folder '{folder}' is not writable "
            f"({error.strerror or error}); choose another output folder or fix its permissions"
        ) from error
    try:
        with os.fdopen(handle, "wb") as stream:
            np.savez_compressed(stream, **arrays)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_name, path)
    except BaseException as error:
        Path(temp_name).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise SegmentationWriteError(
                f"cannot write '{path}': {error.strerror or error}; the previous file, if any, "
                "is unchanged"
            ) from error
        raise
    fsync_folder(folder)
    return path


def _segs_for_saving(segs: np.ndarray) -> np.ndarray:
    segs = np.asarray(segs)
    if segs.dtype.kind not in "iub":
        raise ValueError(f"segs must hold integer labels; got dtype {segs.dtype}")
    if segs.ndim not in (2, 3):
        raise ValueError(f"segs must be (H, W) or (D, H, W); got shape {segs.shape}")
    if segs.size and segs.min() < 0:
        raise ValueError("segs must not hold negative labels")
    top = int(segs.max()) if segs.size else 0
    if top > np.iinfo(np.uint16).max:
        raise ValueError(f"segs labels must be at most 65535; got {top}")
    return segs.astype(np.uint8 if top < 256 else np.uint16)


def _extra_for_saving(key: str, value: np.ndarray) -> np.ndarray:
    if key == "segs" or not key.isidentifier():
        raise ValueError(f"extra array name {key!r} must be an identifier other than 'segs'")
    array = np.asarray(value)
    if array.dtype.hasobject:
        raise ValueError(f"extra array {key!r} must be numeric, not Python objects")
    return array


def iter_cases(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand files and folders into the list of case files to process.

    A folder contributes its ``*.npz`` files (not recursive, sorted by name); a file is
    taken as given. Duplicates are dropped, order is kept. Raises ``ChallengeFileError``
    for a path that does not exist.
    """
    found: list[Path] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            found.extend(sorted(p for p in item.glob("*.npz") if p.is_file()))
        elif item.is_file():
            found.append(item)
        else:
            raise ChallengeFileError(f"{item}: no such file or folder")
    unique: dict[Path, None] = {}
    for case_path in found:
        unique.setdefault(case_path, None)
    return list(unique)
