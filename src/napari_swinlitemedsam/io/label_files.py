"""Writing and reading label maps in the formats a labelling series offers.

Formats (:data:`LABEL_FORMATS`, name -> file suffix):

* ``"tiff"`` -> ``.tif``: the label array as it is (``(H, W)`` or ``(D, H, W)``), zlib-compressed;
* ``"npz"`` -> ``.npz``: a challenge prediction (key ``segs``, :func:`challenge_io.save_segs`);
* ``"nifti"`` -> ``.nii.gz``: needs ``nibabel``. For an image read from a medical file
  (:attr:`LoadedImage.geometry`), the labels go back through its geometry into the source's
  voxel order with its affine, header and qform/sform codes (a DICOM source gets the scanner's
  affine); for other images they are transposed to ``(x, y, z)`` with the image's spacing.
* ``"nrrd"`` -> ``.nrrd`` and ``"mha"`` -> ``.mha``: SimpleITK, with the source image's origin,
  spacing and direction (only for images read from a medical file).

:data:`AUTO_FORMAT` (``"auto"``) is not a file format: a series given it writes each item's
labels in its image's format (:func:`labels_format_for`).

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

LABEL_FORMATS = {
    "tiff": ".tif",
    "npz": ".npz",
    "nifti": ".nii.gz",
    "nrrd": ".nrrd",
    "mha": ".mha",
}
AUTO_FORMAT = "auto"
GEOMETRY_FORMATS = ("nrrd", "mha")  # need the image's scanner geometry


class LabelFileError(ValueError):
    """Labels could not be written or read in the requested format."""


def check_label_format(name: str, allow_auto: bool = False) -> str:
    """``name`` if it is one of :data:`LABEL_FORMATS` (or ``"auto"`` when ``allow_auto``), else
    LabelFileError naming them."""
    if name not in LABEL_FORMATS and not (allow_auto and name == AUTO_FORMAT):
        choices = sorted(LABEL_FORMATS) + ([AUTO_FORMAT] if allow_auto else [])
        raise LabelFileError(f"unknown label format {name!r}; choose one of {choices}")
    return name


def labels_format_for(image_path: str | os.PathLike) -> str:
    """The label format matching an image file's own: NIfTI for NIfTI and DICOM folders, NRRD
    for NRRD, MHA for MetaImage (``.mha`` / ``.mhd``), TIFF for everything else."""
    from napari_swinlitemedsam.io.medical_volumes import LABELS_FORMAT_OF_SOURCE, source_format_of

    source_format = source_format_of(image_path)
    return LABELS_FORMAT_OF_SOURCE.get(source_format, "tiff") if source_format else "tiff"


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

    ``image``: the image the labels belong to; NIfTI, NRRD and MHA output take its geometry
    (NIfTI without one: an identity affine scaled by its spacing). Returns ``path``.
    """
    check_label_format(label_format)
    path = Path(path)
    array = compact_labels(labels)
    geometry = getattr(image, "geometry", None)
    if label_format in ("nifti",) + GEOMETRY_FORMATS and geometry is not None:
        return _save_like_source(path, array, geometry)
    if label_format in GEOMETRY_FORMATS:
        raise LabelFileError(
            f"{path}: {label_format.upper()} labels need an image read from a NIfTI, DICOM, "
            "NRRD or MHA file (for its scanner geometry); save as tiff or nifti instead"
        )
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


def _save_like_source(path: Path, array: np.ndarray, geometry) -> Path:
    from napari_swinlitemedsam.io.medical_volumes import MedicalFileError, write_labels_like

    if array.ndim == 2:  # a single-slice volume shown as a 2D image
        array = array[None]
    try:
        return write_labels_like(path, array, geometry)
    except MedicalFileError as error:
        raise LabelFileError(str(error)) from error


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


def load_labels(
    path: str | os.PathLike, label_format: str, image: LoadedImage | None = None
) -> np.ndarray:
    """Read labels written by :func:`save_labels` back in (H, W) / (D, H, W) order.

    ``image``: the image they belong to; when it has a source geometry, NIfTI / NRRD / MHA
    labels are put in its display orientation voxel for voxel.
    """
    check_label_format(label_format)
    path = Path(path)
    geometry = getattr(image, "geometry", None)
    if label_format in ("nifti",) + GEOMETRY_FORMATS and geometry is not None:
        from napari_swinlitemedsam.io.medical_volumes import MedicalFileError, read_labels_like

        try:
            labels = read_labels_like(path, geometry)
        except MedicalFileError as error:
            raise LabelFileError(str(error)) from error
        return labels[0] if image.data.ndim == 2 else labels
    if label_format in GEOMETRY_FORMATS:
        raise LabelFileError(f"{path}: reading these labels needs the image they belong to")
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
