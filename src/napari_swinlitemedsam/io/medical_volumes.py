"""CT and MR volumes as clinicians have them: NIfTI, DICOM series, NRRD and MetaImage (MHA/MHD).

:func:`read_medical_volume` returns a :class:`MedicalVolume`: the voxels in the one display
orientation of :mod:`.volume_geometry` (``(D, H, W)`` axial slices, patient left on screen
right) plus the source's geometry. :func:`write_labels_like` writes a ``(D, H, W)`` label map
back in the source's format and geometry, so a reference reader (nibabel, SimpleITK) finds the
labels on the same voxels as the image.

Libraries (each optional, with a message naming the pip command when missing):

* NIfTI ``.nii`` / ``.nii.gz``: nibabel (the affine, the qform/sform codes and the header are
  kept; intensity scaling ``scl_slope``/``scl_inter`` is applied on reading).
* NRRD ``.nrrd`` / ``.nhdr``, MetaImage ``.mha`` / ``.mhd``: SimpleITK (origin, spacing and
  direction kept). A ``.mhd`` source gets its labels as ``.mha`` (the same MetaImage format in
  one file, so the write stays atomic).
* DICOM series (a folder): pydicom, see :mod:`.dicom_series`; labels go out as NIfTI.

Every write is atomic (temporary file, then rename).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_swinlitemedsam.io.volume_geometry import (
    RAS_FROM_LPS,
    GeometryError,
    VolumeGeometry,
    display_geometry,
)
from napari_swinlitemedsam.storage.atomic_files import write_file_atomically

NIFTI_SUFFIXES = (".nii.gz", ".nii")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
VOLUME_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES
# Format of the labels written for each source format, and their file suffix.
LABELS_FORMAT_OF_SOURCE = {
    "nifti": "nifti",
    "dicom": "nifti",
    "nrrd": "nrrd",
    "mha": "mha",
    "mhd": "mha",
}
LABELS_SUFFIX = {"nifti": ".nii.gz", "nrrd": ".nrrd", "mha": ".mha"}


class MedicalFileError(ValueError):
    """A medical image cannot be read or written; the message says what to do."""


@dataclass(frozen=True)
class MedicalVolume:
    """A volume in the display orientation with its source geometry.

    Attributes:
        path: the file, or the DICOM folder.
        data: ``(D, H, W)`` voxels (see :mod:`.volume_geometry`), dtype as stored after
            rescaling (CT in Hounsfield units).
        geometry: how ``data`` maps back to the source and to the patient.
        modality: ``"CT"``, ``"MR"``... when the file says so, else None.
        description: a short human-readable name (series description, file name).
    """

    path: Path
    data: np.ndarray
    geometry: VolumeGeometry
    modality: str | None = None
    description: str = ""

    @property
    def spacing(self) -> tuple[float, float, float]:
        return self.geometry.spacing


def volume_suffix(path: str | os.PathLike) -> str | None:
    """The medical-volume suffix of ``path`` (lower case, ``.nii.gz`` whole), or None."""
    name = Path(path).name.lower()
    for suffix in VOLUME_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return suffix
    return None


def source_format_of(path: str | os.PathLike) -> str | None:
    """``"nifti"``, ``"nrrd"``, ``"mha"``, ``"mhd"`` or ``"dicom"`` (a folder), else None."""
    path = Path(path)
    if path.is_dir():
        return "dicom"
    suffix = volume_suffix(path)
    if suffix in NIFTI_SUFFIXES:
        return "nifti"
    return {".nrrd": "nrrd", ".nhdr": "nrrd", ".mha": "mha", ".mhd": "mhd"}.get(suffix)


def read_medical_volume(path: str | os.PathLike, series_uid: str | None = None) -> MedicalVolume:
    """Read a NIfTI / NRRD / MetaImage file or a DICOM folder (``series_uid`` picks one series
    of several). Raises :class:`MedicalFileError` with what to do; nothing is half-loaded."""
    path = Path(path)
    source_format = source_format_of(path)
    if source_format is None:
        raise MedicalFileError(
            f"{path}: not a medical volume; open a DICOM folder or a file ending in "
            f"{', '.join(VOLUME_SUFFIXES)}"
        )
    if source_format == "dicom":
        from napari_swinlitemedsam.io.dicom_series import read_dicom_series

        return read_dicom_series(path, series_uid)
    if not path.is_file():
        raise MedicalFileError(f"{path}: no such file")
    if source_format == "nifti":
        return _read_nifti(path)
    return _read_itk(path, source_format)


def labels_path_for(volume_path: str | os.PathLike, folder: str | os.PathLike, name: str) -> Path:
    """Where labels ``name`` of the volume at ``volume_path`` go in ``folder``, in the format
    :func:`write_labels_like` uses for that source."""
    source_format = source_format_of(volume_path) or "nifti"
    return Path(folder) / (name + LABELS_SUFFIX[LABELS_FORMAT_OF_SOURCE[source_format]])


def write_labels_like(
    path: str | os.PathLike, labels: np.ndarray, geometry: VolumeGeometry
) -> Path:
    """Write ``labels`` (``(D, H, W)`` display orientation, integers >= 0) to ``path`` in the
    source's geometry: NIfTI for NIfTI and DICOM sources, NRRD / MHA for ITK sources (chosen by
    the suffix of ``path`` when it is one of those). Returns ``path``."""
    path = Path(path)
    array = _label_array(labels)
    try:
        source_array = np.ascontiguousarray(geometry.to_source(array))
    except GeometryError as error:
        raise MedicalFileError(f"{path}: {error}") from error
    suffix = volume_suffix(path)
    nifti_source = geometry.source_format in ("nifti", "dicom")
    if suffix in NIFTI_SUFFIXES or (suffix is None and nifti_source):
        return _write_nifti(path, source_array, geometry)
    if suffix in (".nhdr", ".mhd"):
        raise MedicalFileError(
            f"{path}: labels are written as one file; use .nrrd or .mha instead of {suffix}"
        )
    if suffix in ITK_SUFFIXES:
        return _write_itk(path, source_array, geometry)
    raise MedicalFileError(f"{path}: save labels as .nii.gz, .nrrd or .mha")


def read_labels_like(path: str | os.PathLike, geometry: VolumeGeometry) -> np.ndarray:
    """Labels written by :func:`write_labels_like` (or any label file on the same voxel grid,
    NIfTI / NRRD / MHA) in the display orientation of ``geometry``: ``(D, H, W)``."""
    path = Path(path)
    suffix = volume_suffix(path)
    try:
        if suffix in NIFTI_SUFFIXES:
            nibabel = _require("nibabel", path, "nibabel")
            source = np.asanyarray(nibabel.load(str(path)).dataobj)
        elif suffix in ITK_SUFFIXES:
            sitk = _require("SimpleITK", path, "SimpleITK")
            source = np.transpose(sitk.GetArrayFromImage(sitk.ReadImage(str(path))))
        else:
            raise MedicalFileError(f"{path}: not a NIfTI, NRRD or MHA label file")
    except MedicalFileError:
        raise
    except Exception as error:  # nibabel / SimpleITK errors of damaged files
        raise MedicalFileError(f"{path}: cannot read saved labels ({error})") from error
    if source.size != int(np.prod(geometry.source_shape)):
        raise MedicalFileError(
            f"{path}: labels of shape {source.shape} do not fit the image {geometry.source_shape}"
        )
    return np.ascontiguousarray(geometry.to_display(source.reshape(geometry.source_shape)))


def _label_array(labels: np.ndarray) -> np.ndarray:
    array = np.asarray(labels)
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if array.dtype.kind not in "iu":
        raise MedicalFileError(f"labels must be integers, got dtype {array.dtype}")
    high = int(array.max()) if array.size else 0
    if array.size and int(array.min()) < 0:
        raise MedicalFileError("labels must not be negative")
    for dtype in (np.uint8, np.uint16, np.uint32):
        if high <= np.iinfo(dtype).max:
            return array.astype(dtype, copy=False)
    raise MedicalFileError(f"label {high} is too large to store")


# ---------------------------------------------------------------------------------------- NIfTI


def _require(module: str, path: Path, extra: str):
    try:
        return __import__(module)
    except ImportError:
        raise MedicalFileError(
            f"{path}: this format needs the {extra} package; install it with: pip install {extra}"
        ) from None


def _read_nifti(path: Path) -> MedicalVolume:
    nibabel = _require("nibabel", path, "nibabel")
    try:
        image = nibabel.load(str(path))
    except Exception as error:  # nibabel raises several types for damaged headers
        raise MedicalFileError(
            f"{path}: cannot be read as NIfTI ({type(error).__name__}: {error})"
        ) from error
    shape = tuple(image.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) > 3:
        raise MedicalFileError(
            f"{path}: a {len(shape)}D NIfTI of shape {tuple(image.shape)} (several volumes, e.g. "
            "time points or channels); split it into 3D files first (nibabel.four_to_three or "
            "fslsplit) and open one"
        )
    try:  # reads every voxel now: a truncated .nii.gz fails here, not later in the viewer
        data = np.asanyarray(image.dataobj)
    except Exception as error:  # gzip/zlib/EOF errors of a truncated or damaged file
        raise MedicalFileError(
            f"{path}: the voxel data is damaged or incomplete ({type(error).__name__}: {error}); "
            "copy the file again"
        ) from error
    data = data.reshape(shape + (1,) * (3 - len(shape)))
    affine_lps = RAS_FROM_LPS @ np.asarray(image.affine, dtype=float)
    header = image.header.copy()
    extra = {"header": header, "image_class": type(image), "stored_shape": tuple(image.shape)}
    try:
        geometry = display_geometry("nifti", data.shape, affine_lps, extra)
    except GeometryError as error:
        raise MedicalFileError(f"{path}: {error}") from error
    return MedicalVolume(path, geometry.to_display(data), geometry, None, path.name.split(".")[0])


def _write_nifti(path: Path, source_array: np.ndarray, geometry: VolumeGeometry) -> Path:
    nibabel = _require("nibabel", path, "nibabel")
    header = geometry.extra.get("header")
    if geometry.source_format == "nifti" and header is not None:
        header = header.copy()
        stored = geometry.extra.get("stored_shape", source_array.shape)
        data = source_array.reshape(stored)
        header.set_data_dtype(source_array.dtype)
        header.set_slope_inter(1.0, 0.0)  # labels are stored as they are, without scaling
        image_class = geometry.extra.get("image_class", nibabel.Nifti1Image)
        # affine None: the header's own qform and sform (and their codes) are kept as stored.
        image = image_class(data, None, header)
    else:
        affine_ras = RAS_FROM_LPS @ geometry.source_affine
        image = nibabel.Nifti1Image(source_array, affine_ras)
        image.set_qform(affine_ras, code=1)  # 1 = scanner anatomical coordinates
        image.set_sform(affine_ras, code=1)
        image.header.set_xyzt_units("mm")
    image.set_data_dtype(source_array.dtype)
    suffix = ".nii.gz" if path.name.lower().endswith(".gz") else ".nii"
    return write_file_atomically(path, lambda temp: nibabel.save(image, str(temp)), suffix)


# ------------------------------------------------------------------------------ NRRD / MetaImage


def _read_itk(path: Path, source_format: str) -> MedicalVolume:
    sitk = _require("SimpleITK", path, "SimpleITK")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:  # SimpleITK reports every reader failure as RuntimeError
        first_line = str(error).strip().splitlines()[-1] if str(error).strip() else ""
        raise MedicalFileError(
            f"{path}: cannot be read as {source_format.upper()} ({first_line})"
        ) from error
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise MedicalFileError(
            f"{path}: {image.GetNumberOfComponentsPerPixel()} components per voxel; "
            "save one grey channel per file"
        )
    dimension = image.GetDimension()
    if dimension not in (2, 3):
        raise MedicalFileError(f"{path}: a {dimension}D image; open a 3D volume or a 2D slice")
    array = sitk.GetArrayFromImage(image)  # (k, j, i) / (j, i)
    spacing = np.array(image.GetSpacing(), dtype=float)
    origin = np.array(image.GetOrigin(), dtype=float)
    direction = np.array(image.GetDirection(), dtype=float).reshape(dimension, dimension)
    if dimension == 2:  # one slice: a unit-normal third axis
        array = array[None]
        spacing = np.append(spacing, 1.0)
        origin = np.append(origin, 0.0)
        full = np.eye(3)
        full[:2, :2] = direction
        direction = full
    affine = np.eye(4)
    affine[:3, :3] = direction @ np.diag(spacing)
    affine[:3, 3] = origin
    source = np.transpose(array, (2, 1, 0))  # ITK's (x, y, z) index order, like NIfTI
    extra = {"dimension": dimension}
    try:
        geometry = display_geometry(source_format, source.shape, affine, extra)
    except GeometryError as error:
        raise MedicalFileError(f"{path}: {error}") from error
    name = path.name.rsplit(".", 1)[0]
    return MedicalVolume(path, geometry.to_display(source), geometry, None, name)


def _write_itk(path: Path, source_array: np.ndarray, geometry: VolumeGeometry) -> Path:
    sitk = _require("SimpleITK", path, "SimpleITK")
    linear = geometry.source_affine[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    direction = linear / spacing
    origin = geometry.source_affine[:3, 3]
    array = np.transpose(source_array, (2, 1, 0))  # back to ITK's numpy order (k, j, i)
    if geometry.extra.get("dimension") == 2:
        image = sitk.GetImageFromArray(array[0])
        image.SetSpacing([float(s) for s in spacing[:2]])
        image.SetOrigin([float(v) for v in origin[:2]])
        image.SetDirection([float(v) for v in direction[:2, :2].ravel()])
    else:
        image = sitk.GetImageFromArray(array)
        image.SetSpacing([float(s) for s in spacing])
        image.SetOrigin([float(v) for v in origin])
        image.SetDirection([float(v) for v in direction.ravel()])
    suffix = Path(path).suffix.lower()

    def write(temp: Path) -> None:
        sitk.WriteImage(image, str(temp), True)  # True: compress the voxels

    return write_file_atomically(path, write, suffix)
