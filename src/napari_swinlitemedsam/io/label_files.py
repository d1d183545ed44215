"""Writing and reading label maps in the formats a labelling series offers.

Formats (:data:`LABEL_FORMATS`, name -> file suffix):

* ``"tiff"`` -> ``.tif``: the label array as it is (``(H, W)`` or ``(D, H, W)``), zlib-compressed;
* ``"npz"`` -> ``.npz``: a challenge prediction (key ``segs``, :func:`challenge_io.save_segs`);
* ``"nifti"`` -> ``.nii.gz``: needs ``nibabel``; the labels are transposed back to NIfTI's
  ``(x, y, z)`` and written with the image's affine and header, so spacing and orientation
  match the image.

Every write is atomic (temporary file in the same folder, then rename): a crash or kill while
saving leaves the previous file as it was.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from napari_swinlitemedsam.io.image_files import ImageFileError, LoadedImage, require_nibabel
from napari_swinlitemedsam.storage.atomic_files import write_atomically, write_file_atomically

LABEL_FORMATS = {"tiff": ".tif", "npz": ".npz", "nifti": ".nii.gz"}


class LabelFileError(ValueError):
    """Labels could not be written or read in the requested format."""


def check_label_format(name: str) -> str:
    """``name`` if it is one of :data:`LABEL_FORMATS`, else LabelFileError naming them."""
    if name not in LABEL_FORMATS:
        raise LabelFileError(
            f"unknown label format {name!r}; choose one of {sorted(LABEL_FORMATS)}"
        )
    return name


def compact_labels(labels: np.ndarray) -> np.ndarray:
    """Integer ``labels`` in the smallest unsigned dtype that holds them (uint8/16/32).

    Raises LabelFileError for non-integer or negative labels.
    """
    array = np.asarray(labels)
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if array.dtype.kind not in "iu":
        raise LabelFileError(f"labels must be integers, got dtype {array.dtype}")
    low = int(array.min()) if array.size else 0
    high = int(array.max()) if array.size else 0
    if low < 0:
        raise LabelFileError("labels must not be negative")
    for dtype in (np.uint8, np.uint16, np.uint32):
        if high <= np.iinfo(dtype).max:
            return array.astype(dtype, copy=False)
    raise LabelFileError(f"label {high} is too large to store")


def labels_digest(labels: np.ndarray) -> str:
    """sha256 of a label map's values and shape (the dtype does not matter)."""
    array = np.ascontiguousarray(compact_labels(labels))
    digest = hashlib.sha256(f"{array.dtype.str}|{array.shape}|".encode())
    digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def save_labels(
    path: str | os.PathLike, labels: np.ndarray, label_format: str, image: LoadedImage | None = None
) -> Path:
    """Write ``labels`` ((H, W) or (D, H, W)) to ``path`` atomically in ``label_format``.

    ``image``: the image the labels belong to; NIfTI output takes its affine and header (without
    it, an identity affine). Returns ``path``.
    """
    check_label_format(label_format)
    path = Path(path)
    array = compact_labels(labels)
    if array.ndim not in (2, 3):
        raise LabelFileError(f"labels must be (H, W) or (D, H, W), got shape {array.shape}")
    if label_format == "npz":
        from napari_swinlitemedsam.io.challenge_io import save_segs

        if array.max(initial=0) > np.iinfo(np.uint16).max:
            raise LabelFileError("challenge .npz labels stop at 65535; save as TIFF instead")
        return save_segs(path, array)
    if label_format == "tiff":
        import tifffile

        return write_atomically(
            path, lambda stream: tifffile.imwrite(stream, array, compression="zlib")
        )
    return _save_nifti(path, array, image)


def _save_nifti(path: Path, array: np.ndarray, image: LoadedImage | None) -> Path:
    nibabel = require_nibabel(path)
    data = array.T  # (z, y, x) -> (x, y, z), as the image was stored
    affine = np.eye(4)
    header = None
    if image is not None and image.affine is None and image.spacing is not None:
        spacing = list(reversed(image.spacing))[: data.ndim]  # (x, y[, z])
        affine[: len(spacing), : len(spacing)] = np.diag(spacing)
    if image is not None and image.affine is not None:
        affine = image.affine
        header = image.header.copy() if image.header is not None else None
        if header is not None:
            stored_shape = tuple(header.get_data_shape())
            if int(np.prod(stored_shape)) == data.size and len(stored_shape) > data.ndim:
                data = data.reshape(stored_shape)  # e.g. (x, y) -> (x, y, 1)
            header.set_data_dtype(array.dtype)
            # Labels are stored as integers; drop any intensity scaling of the image.
            header.set_slope_inter(1.0, 0.0)
    nifti = nibabel.Nifti1Image(np.asarray(data), affine, header)
    nifti.set_data_dtype(array.dtype)
    return write_file_atomically(path, lambda temp: nibabel.save(nifti, str(temp)), ".nii.gz")


def load_labels(path: str | os.PathLike, label_format: str) -> np.ndarray:
    """Read labels written by :func:`save_labels` back in (H, W) / (D, H, W) order."""
    check_label_format(label_format)
    path = Path(path)
    try:
        if label_format == "npz":
            from napari_swinlitemedsam.io.challenge_io import read_npz_arrays

            return read_npz_arrays(path, required=("segs",))["segs"]
        if label_format == "tiff":
            import tifffile

            return np.asarray(tifffile.imread(path))
        nibabel = require_nibabel(path)
        data = np.asanyarray(nibabel.load(str(path)).dataobj)
        if data.ndim == 3 and data.shape[2] == 1:
            data = data[:, :, 0]
        return np.ascontiguousarray(data.T)
    except (ImageFileError, FileNotFoundError):
        raise
    except Exception as error:
        raise LabelFileError(
            f"{path}: cannot read saved labels ({type(error).__name__}: {error})"
        ) from error
