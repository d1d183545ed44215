"""Reading images and stacks from files, without napari.

Formats: TIFF (``tifffile``), PNG/JPEG (Pillow), challenge ``.npz`` cases (``imgs``), the
medical volumes of :mod:`.medical_volumes`: NIfTI (``.nii`` / ``.nii.gz``, nibabel), NRRD and
MetaImage (``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``, SimpleITK) and DICOM series folders (pydicom),
and zarr / OME-Zarr stores (``.zarr`` folders, opened lazily as dask arrays: see
:mod:`.zarr_stacks`).

Axis order of :attr:`LoadedImage.data`: a 2D image is ``(H, W)`` or ``(H, W, C)`` with C = 3 or
4 (colour); a stack is ``(D, H, W)``. Medical volumes come in the display orientation of
:mod:`.volume_geometry` (axial slices, patient left on screen right) with their source geometry
in :attr:`LoadedImage.geometry`; labels are written back through it (:mod:`.label_files`), so
they land on the source's voxels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_swinlitemedsam.io.zarr_stacks import ZarrStackError, is_zarr_path, open_zarr_stack

TIFF_SUFFIXES = (".tif", ".tiff")
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg")
NIFTI_SUFFIXES = (".nii.gz", ".nii")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
CHALLENGE_SUFFIXES = (".npz",)
IMAGE_SUFFIXES = (
    TIFF_SUFFIXES + PICTURE_SUFFIXES + NIFTI_SUFFIXES + ITK_SUFFIXES + CHALLENGE_SUFFIXES
)


class ImageFileError(ValueError):
    """A file could not be read as an image (unknown format, damaged, missing reader)."""


@dataclass(frozen=True)
class LoadedImage:
    """One image or stack read from a file.

    Attributes:
        path: where it came from.
        data: ``(H, W)``, ``(H, W, C)`` or ``(D, H, W)`` pixels, dtype as stored (a numpy
            array, or a lazy dask array for zarr stores).
        is_stack: whether ``data`` is a ``(D, H, W)`` stack.
        spacing: pixel size per axis of ``data`` (without a colour axis), or None.
        affine: NIfTI (4, 4) voxel-to-world matrix (RAS), else None.
        header: NIfTI header (reused when labels are written), else None.
        geometry: the source geometry of a medical volume
            (:class:`~.volume_geometry.VolumeGeometry`), else None.
    """

    path: Path
    data: np.ndarray
    is_stack: bool
    spacing: tuple[float, ...] | None = None
    affine: np.ndarray | None = None
    header: Any = None
    geometry: Any = None


def image_suffix(path: str | os.PathLike) -> str | None:
    """The recognised suffix of ``path`` (lower case, ``".nii.gz"`` whole), or None."""
    name = Path(path).name.lower()
    for suffix in IMAGE_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return suffix
    return None


def base_name(path: str | os.PathLike) -> str:
    """The file name without its image suffix (``"ct_01.nii.gz"`` -> ``"ct_01"``); a DICOM
    folder's name as it is."""
    name = Path(path).name
    if Path(path).is_dir():
        return name
    suffix = image_suffix(path)
    return name[: -len(suffix)] if suffix else Path(name).stem


def nibabel_available() -> bool:
    try:
        import nibabel  # noqa: F401
    except ImportError:
        return False
    return True


def require_nibabel(path: str | os.PathLike):
    """The ``nibabel`` module, or ImageFileError telling how to install it."""
    try:
        import nibabel
    except ImportError:
        raise ImageFileError(
            f"{path}: NIfTI files need the nibabel package; install it with: pip install nibabel"
        ) from None
    return nibabel


def read_image(path: str | os.PathLike) -> LoadedImage:
    """Read one image or stack (formats and axis order in the module docstring).

    Raises :class:`ImageFileError` for missing, unreadable or unsupported files.
    """
    path = Path(path)
    if is_zarr_path(path):
        return _read_zarr(path)
    if path.is_dir():
        return _read_medical(path)
    suffix = image_suffix(path)
    if suffix is None:
        raise ImageFileError(
            f"{path}: not a supported image file; use one of {', '.join(IMAGE_SUFFIXES)}"
        )
    if not path.is_file():
        raise ImageFileError(f"{path}: no such file")
    if suffix in CHALLENGE_SUFFIXES:
        return _read_challenge(path)
    if suffix in NIFTI_SUFFIXES + ITK_SUFFIXES:
        return _read_medical(path)
    try:
        if suffix in TIFF_SUFFIXES:
            import tifffile

            data = np.asarray(tifffile.imread(path))
            if data.ndim > 3:  # (1, D, H, W) and the like: drop the single-sized axes
                data = data.reshape([size for size in data.shape if size != 1])
        else:
            data = _read_picture(path)
    except ImageFileError:
        raise
    except Exception as error:  # each reader has its own error types for damaged files
        raise ImageFileError(f"{path}: cannot be read ({type(error).__name__}: {error})") from error
    if data.size == 0:
        raise ImageFileError(f"{path}: cannot be read as an image: it holds no pixels")
    return LoadedImage(path, data, is_stack_shape(data.shape, path))


def _read_zarr(path: Path) -> LoadedImage:
    """A zarr / OME-Zarr store, opened lazily: ``data`` is a dask array (nothing read yet)."""
    try:
        stack = open_zarr_stack(path)
    except ZarrStackError as error:
        raise ImageFileError(str(error)) from None
    shape = tuple(stack.data.shape)
    return LoadedImage(path, stack.data, is_stack_shape(shape, path), spacing=stack.spacing)


def is_stack_shape(shape: tuple[int, ...], path: Path | str = "image") -> bool:
    """Whether an array of ``shape`` is a ``(D, H, W)`` stack rather than a 2D image.

    ``(H, W)`` and ``(H, W, 3|4)`` are 2D; other 3D shapes are stacks; colour stacks and
    anything else raise :class:`ImageFileError`.
    """
    if len(shape) == 2:
        return False
    if len(shape) == 3:
        return shape[-1] not in (3, 4)
    raise ImageFileError(
        f"{path}: shape {tuple(shape)} is neither a 2D image (H, W[, 3]) nor a stack (D, H, W); "
        "save one grey channel per file"
    )


def _read_picture(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as picture:
        if picture.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
            picture = picture.convert("RGBA" if "A" in picture.mode else "RGB")
        elif picture.mode == "LA":
            picture = picture.convert("L")
        return np.asarray(picture)


def _read_challenge(path: Path) -> LoadedImage:
    from napari_swinlitemedsam.io.challenge_io import ChallengeFileError, load_case

    try:
        case = load_case(path)
    except ChallengeFileError as error:
        raise ImageFileError(str(error)) from error
    spacing = None if case.spacing is None else tuple(float(s) for s in case.spacing)
    return LoadedImage(path, case.imgs, case.is_3d, spacing)


def _read_medical(path: Path) -> LoadedImage:
    """A NIfTI / NRRD / MetaImage file or DICOM folder in the display orientation; a single
    slice comes out as a 2D image ``(H, W)``."""
    from napari_swinlitemedsam.io.medical_volumes import MedicalFileError, read_medical_volume

    if path.name.lower().endswith(NIFTI_SUFFIXES):
        require_nibabel(path)
    try:
        volume = read_medical_volume(path)
    except MedicalFileError as error:
        raise ImageFileError(str(error)) from error
    data, spacing = volume.data, volume.spacing
    if data.shape[0] == 1:
        data, spacing = data[0], spacing[1:]
    affine = header = None
    if volume.geometry.source_format == "nifti":
        from napari_swinlitemedsam.io.volume_geometry import RAS_FROM_LPS

        affine = RAS_FROM_LPS @ volume.geometry.source_affine
        header = volume.geometry.extra.get("header")
    return LoadedImage(path, data, data.ndim == 3, tuple(spacing), affine, header, volume.geometry)
