"""Finding the images of a series: folders, glob patterns and single files, in a stable order.

A folder contributes its supported image files (sorted by name, not recursive), then its
subfolders that hold DICOM files (one series each, sorted); a zarr store is one image, not a
folder. :class:`~napari_swinlitemedsam.annotation.series.ImageSeries` pairs each item found here
with its labels in the output folder.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from pathlib import Path

from napari_swinlitemedsam.io.dicom_series import looks_like_dicom_folder
from napari_swinlitemedsam.io.image_files import (
    IMAGE_SUFFIXES,
    NIFTI_SUFFIXES,
    image_suffix,
    nibabel_available,
)
from napari_swinlitemedsam.io.zarr_stacks import is_zarr_path


class SeriesError(ValueError):
    """A series cannot be built or used as asked (no images, clashing names, bad index)."""


def list_series_items(sources: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Image files from folders (their supported files, sorted, not recursive), glob patterns
    (``"scans/*.nii.gz"``) and single files, in the order given, without duplicates. A folder's
    subfolders holding DICOM files are items too (one series each), and a folder with no image
    files but DICOM files in it is one item.

    Raises SeriesError when nothing is found, a path does not exist, or NIfTI files are listed
    but ``nibabel`` is missing.
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    found: dict[Path, None] = {}
    for source in sources:
        text = str(source)
        path = Path(text).expanduser()
        if path.is_dir() and is_zarr_path(path):
            matches = [path]  # a zarr store is one (lazy) image, not a folder of images
        elif path.is_dir():
            matches = sorted(p for p in path.iterdir() if _is_image_file(p))
            matches += sorted(
                p
                for p in path.iterdir()
                if p.is_dir() and not p.name.startswith(".") and looks_like_dicom_folder(p)
            )
            if not matches and looks_like_dicom_folder(path):
                matches = [path]
        elif path.is_file():
            if image_suffix(path) is None:
                raise SeriesError(f"{path}: not a supported image; use {', '.join(IMAGE_SUFFIXES)}")
            matches = [path]
        elif glob.has_magic(text):
            pattern = os.path.expanduser(text)
            matches = sorted(Path(p) for p in glob.glob(pattern) if _is_image_file(Path(p)))
        else:
            raise SeriesError(f"{path}: no such file or folder")
        for match in matches:
            found.setdefault(match, None)
    items = list(found)
    if not items:
        raise SeriesError(
            f"no images found in {', '.join(map(str, sources))}; supported files end in "
            f"{', '.join(IMAGE_SUFFIXES)}"
        )
    nifti = [p for p in items if image_suffix(p) in NIFTI_SUFFIXES]
    if nifti and not nibabel_available():
        raise SeriesError(
            f"{len(nifti)} NIfTI file(s) (e.g. {nifti[0].name}) need the nibabel package; "
            "install it with: pip install nibabel"
        )
    return items


def _is_image_file(path: Path) -> bool:
    if path.name.startswith("."):
        return False
    if is_zarr_path(path):
        return path.is_dir()
    return path.is_file() and image_suffix(path) is not None
