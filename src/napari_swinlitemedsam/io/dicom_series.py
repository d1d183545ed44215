"""DICOM series from a folder, with pydicom: slices ordered by position, CT in Hounsfield units.

A folder (searched with its subfolders) may hold several series; :func:`list_dicom_series` finds
them and :func:`read_dicom_series` reads one (``series_uid``), or raises
:class:`MultipleSeriesError` listing them so the caller lets the user pick.

Reading a series:

* slices are sorted by their position along the slice normal (``ImagePositionPatient`` projected
  on the cross product of the ``ImageOrientationPatient`` row and column directions), never by
  file name or ``InstanceNumber``;
* ``RescaleSlope`` / ``RescaleIntercept`` are applied (CT comes out in HU; int16 when the values
  are whole numbers in its range, float32 otherwise);
* refused with a message, before any voxel is used: several orientations or image sizes in one
  series, duplicate positions, missing slices or uneven slice spacing, a gantry tilt (slices
  sheared along the normal), files without pixel data, multi-frame files, compressed pixel data
  without a decoder (the message names the pip packages).

The volume goes into the display orientation of :mod:`.volume_geometry`; its source array is
``(column, row, slice)`` so that it is written back as NIfTI with the scanner's affine.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_swinlitemedsam.io.medical_volumes import MedicalFileError, MedicalVolume
from napari_swinlitemedsam.io.volume_geometry import display_geometry

DECODER_HINT = (
    "install a decoder for it: pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg "
    "pylibjpeg-rle (or: pip install python-gdcm)"
)
# Relative tolerance on slice gaps, and the largest angle between the slice stacking direction
# and the slice normal still taken as "no tilt" (scanner positions are rounded to ~0.01 mm).
SPACING_TOLERANCE = 0.01
TILT_TOLERANCE_DEGREES = 0.05


class MultipleSeriesError(MedicalFileError):
    """The folder holds several series; ``series`` lists them for the user to pick one."""

    def __init__(self, folder: Path, series: list[DicomSeriesInfo]) -> None:
        self.folder = folder
        self.series = series
        lines = "; ".join(info.label for info in series)
        super().__init__(f"{folder}: {len(series)} DICOM series, pick one: {lines}")


@dataclass(frozen=True)
class DicomSeriesInfo:
    """One series found in a folder (from the headers only)."""

    uid: str
    number: int | None
    description: str
    modality: str
    files: tuple[Path, ...]

    @property
    def label(self) -> str:
        number = "?" if self.number is None else str(self.number)
        text = self.description or "no description"
        return f"series {number} {self.modality} '{text}', {len(self.files)} files (UID {self.uid})"


def _pydicom(folder: Path):
    try:
        import pydicom
    except ImportError:
        raise MedicalFileError(
            f"{folder}: DICOM folders need the pydicom package; install it with: "
            "pip install pydicom"
        ) from None
    return pydicom


def list_dicom_series(folder: str | os.PathLike) -> list[DicomSeriesInfo]:
    """The DICOM image series under ``folder`` (subfolders included), by series number.

    Files that are not DICOM are skipped. Raises :class:`MedicalFileError` when there is none.
    """
    folder = Path(folder)
    pydicom = _pydicom(folder)
    if not folder.is_dir():
        raise MedicalFileError(f"{folder}: no such folder")
    groups: dict[str, list] = {}
    for root, _dirs, names in os.walk(folder):
        for name in sorted(names):
            path = Path(root) / name
            if name.startswith(".") or name.upper() == "DICOMDIR":
                continue
            try:
                header = pydicom.dcmread(path, stop_before_pixels=True)
            except (pydicom.errors.InvalidDicomError, OSError, EOFError, ValueError):
                continue
            uid = str(header.get("SeriesInstanceUID", "") or "")
            if not uid or "SOPClassUID" not in header and "ImagePositionPatient" not in header:
                continue
            groups.setdefault(uid, []).append((path, header))
    if not groups:
        raise MedicalFileError(f"{folder}: no DICOM image files found (subfolders included)")
    series = []
    for uid, members in groups.items():
        first = members[0][1]
        number = first.get("SeriesNumber")
        series.append(
            DicomSeriesInfo(
                uid,
                int(number) if number not in (None, "") else None,
                str(first.get("SeriesDescription", "") or ""),
                str(first.get("Modality", "") or ""),
                tuple(path for path, _ in members),
            )
        )
    return sorted(series, key=lambda info: (info.number is None, info.number or 0, info.uid))


def read_dicom_series(folder: str | os.PathLike, series_uid: str | None = None) -> MedicalVolume:
    """The series ``series_uid`` under ``folder`` (or its only series) as a display volume.

    Raises :class:`MultipleSeriesError` when the folder holds several series and none is
    chosen, :class:`MedicalFileError` for everything that makes the volume unsafe to use.
    """
    folder = Path(folder)
    pydicom = _pydicom(folder)
    found = list_dicom_series(folder)
    if series_uid is None:
        if len(found) > 1:
            raise MultipleSeriesError(folder, found)
        chosen = found[0]
    else:
        matches = [info for info in found if info.uid == series_uid]
        if not matches:
            raise MedicalFileError(f"{folder}: no series with UID {series_uid}")
        chosen = matches[0]
    datasets = []
    for path in chosen.files:
        try:
            dataset = pydicom.dcmread(path)
        except Exception as error:  # pydicom raises several types for damaged files
            raise MedicalFileError(f"{path}: cannot be read ({error})") from error
        if "PixelData" not in dataset:
            raise MedicalFileError(
                f"{path}: a DICOM file without pixel data (e.g. a report or a structure set) "
                "in an image series; move it out of the folder"
            )
        if int(dataset.get("NumberOfFrames", 1) or 1) > 1:
            raise MedicalFileError(
                f"{path}: a multi-frame DICOM file; convert it to NIfTI (e.g. with dcm2niix) "
                "and open that"
            )
        datasets.append((path, dataset))
    return _assemble(folder, chosen, datasets)


def _vector(dataset, keyword: str, size: int, path: Path) -> np.ndarray:
    value = dataset.get(keyword)
    if value is None or len(value) != size:
        raise MedicalFileError(f"{path}: {keyword} is missing; the slice cannot be placed")
    return np.array([float(v) for v in value])


def _assemble(folder: Path, info: DicomSeriesInfo, datasets: list) -> MedicalVolume:
    first_path, first = datasets[0]
    orientation = _vector(first, "ImageOrientationPatient", 6, first_path)
    row_direction, column_direction = orientation[:3], orientation[3:]
    normal = np.cross(row_direction, column_direction)
    pixel_spacing = _vector(first, "PixelSpacing", 2, first_path)  # (between rows, columns)
    size = (int(first.Rows), int(first.Columns))
    placed = []
    for path, dataset in datasets:
        own_orientation = _vector(dataset, "ImageOrientationPatient", 6, path)
        if not np.allclose(own_orientation, orientation, rtol=0, atol=1e-4):
            raise MedicalFileError(
                f"{folder}: slices with different orientations in one series (e.g. {path.name}); "
                "this is not one volume"
            )
        if (int(dataset.Rows), int(dataset.Columns)) != size:
            raise MedicalFileError(f"{folder}: slices of different sizes (e.g. {path.name})")
        position = _vector(dataset, "ImagePositionPatient", 3, path)
        placed.append((float(position @ normal), position, path, dataset))
    placed.sort(key=lambda item: item[0])
    distances = np.array([item[0] for item in placed])
    slice_step = _check_slice_gaps(folder, distances, placed, first)
    positions = np.array([item[1] for item in placed])
    if len(placed) > 1:
        stacking = positions[-1] - positions[0]
        cosine = abs(float(stacking @ normal)) / float(np.linalg.norm(stacking))
        tilt = math.degrees(math.acos(min(1.0, cosine)))
        if tilt > TILT_TOLERANCE_DEGREES:
            raise MedicalFileError(
                f"{folder}: the slices are sheared by {tilt:.1f} degrees (gantry tilt); "
                "resample the series to a regular grid first (e.g. dcm2niix or 3D Slicer) and "
                "open that"
            )
    planes = [_rescaled_pixels(path, dataset) for _, _, path, dataset in placed]
    stack = np.stack(planes)  # (slice, row, column)
    stack = _compact(stack)
    affine = np.eye(4)
    affine[:3, 0] = row_direction * pixel_spacing[1]  # along a row: the column index grows
    affine[:3, 1] = column_direction * pixel_spacing[0]
    affine[:3, 2] = normal * slice_step
    affine[:3, 3] = positions[0]
    source = np.transpose(stack, (2, 1, 0))  # (column, row, slice), NIfTI's (i, j, k)
    extra = {
        "series_uid": info.uid,
        "study_uid": str(first.get("StudyInstanceUID", "") or ""),
        "frame_of_reference_uid": str(first.get("FrameOfReferenceUID", "") or ""),
        "files": tuple(item[2] for item in placed),
    }
    geometry = display_geometry("dicom", source.shape, affine, extra)
    return MedicalVolume(
        folder,
        geometry.to_display(source),
        geometry,
        info.modality or None,
        info.description or folder.name,
    )


def _check_slice_gaps(folder: Path, distances: np.ndarray, placed: list, first) -> float:
    """The slice step (mm); MedicalFileError for duplicate, missing or unevenly spaced slices."""
    if len(distances) == 1:
        return float(first.get("SpacingBetweenSlices") or first.get("SliceThickness") or 1.0)
    gaps = np.diff(distances)
    if np.any(gaps < 1e-3):
        index = int(np.argmin(gaps))
        raise MedicalFileError(
            f"{folder}: two slices at the same position ({placed[index][2].name}, "
            f"{placed[index + 1][2].name}); the folder mixes acquisitions: keep one of them"
        )
    step = float(np.min(gaps))
    uneven = np.abs(gaps - step) > SPACING_TOLERANCE * step + 1e-3
    if not np.any(uneven):
        return float(np.mean(gaps))
    ratios = gaps / step
    if np.allclose(ratios, np.round(ratios), atol=SPACING_TOLERANCE * 5):
        missing = int(np.round(ratios).sum() - len(gaps))
        raise MedicalFileError(
            f"{folder}: {missing} slice(s) missing from the series (gaps of {step:.3g} mm and "
            f"{gaps.max():.3g} mm); copy the complete series"
        )
    raise MedicalFileError(
        f"{folder}: uneven slice spacing ({gaps.min():.3g} to {gaps.max():.3g} mm); resample "
        "the series to a regular grid first (e.g. dcm2niix or 3D Slicer)"
    )


def _rescaled_pixels(path: Path, dataset) -> np.ndarray:
    try:
        pixels = dataset.pixel_array
    except (NotImplementedError, RuntimeError, ImportError) as error:
        syntax = dataset.file_meta.get("TransferSyntaxUID", "unknown")
        name = getattr(syntax, "name", str(syntax))
        raise MedicalFileError(
            f"{path}: pixel data compressed as {name} cannot be decoded here; {DECODER_HINT}"
        ) from error
    except Exception as error:  # damaged or truncated pixel data
        raise MedicalFileError(f"{path}: the pixel data cannot be read ({error})") from error
    if pixels.ndim != 2:
        raise MedicalFileError(
            f"{path}: pixel data of shape {pixels.shape}; only grey single-frame slices are read"
        )
    slope = float(dataset.get("RescaleSlope", 1) or 1)
    intercept = float(dataset.get("RescaleIntercept", 0) or 0)
    if slope == 1.0 and intercept == 0.0:
        return pixels
    return pixels.astype(np.float64) * slope + intercept


def _compact(stack: np.ndarray) -> np.ndarray:
    """int16 for whole-number values in its range (CT in HU), else float32; integers as read."""
    if stack.dtype.kind in "iu":
        return stack
    low, high = float(stack.min()), float(stack.max())
    whole = np.array_equal(stack, np.round(stack))
    if whole and np.iinfo(np.int16).min <= low and high <= np.iinfo(np.int16).max:
        return stack.astype(np.int16)
    return stack.astype(np.float32)


def looks_like_dicom_folder(folder: str | os.PathLike, files_to_try: int = 20) -> bool:
    """Whether ``folder`` (or a subfolder) holds a DICOM Part 10 file ("DICM" at byte 128),
    looking at no more than ``files_to_try`` files, without pydicom: cheap enough for napari's
    reader lookup."""
    tried = 0
    for root, _dirs, names in os.walk(folder):
        for name in names:
            if name.startswith("."):
                continue
            tried += 1
            try:
                with open(Path(root) / name, "rb") as handle:
                    handle.seek(128)
                    if handle.read(4) == b"DICM":
                        return True
            except OSError:
                pass
            if tried >= files_to_try:
                return False
    return False
