"""Medical files written by the reference libraries themselves (pydicom, nibabel, SimpleITK),
with non-trivial geometry, for the reader/writer tests.

Every helper writes into a folder the test gives (``tmp_path``) and returns what the test needs
to check the reading: the voxels in the source's own index order and the geometry.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def rotation_z(degrees: float) -> np.ndarray:
    angle = math.radians(degrees)
    cos, sin = math.cos(angle), math.sin(angle)
    return np.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])


def head_like_volume(shape=(12, 10, 7), seed=0) -> np.ndarray:
    """(i, j, k) int16 voxels with a bright block, so labels have a place to go."""
    rng = np.random.default_rng(seed)
    data = rng.integers(-100, 100, size=shape).astype(np.int16)
    data[3:8, 2:6, 1:5] += 1000
    return data


def write_nifti(path: Path, data: np.ndarray, affine_ras: np.ndarray, codes=(1, 2)) -> None:
    """A NIfTI written by nibabel with ``affine_ras`` as both qform (code codes[0]) and sform."""
    import nibabel

    image = nibabel.Nifti1Image(data, affine_ras)
    image.set_qform(affine_ras, code=codes[0])
    image.set_sform(affine_ras, code=codes[1])
    nibabel.save(image, str(path))


def write_itk(path: Path, data: np.ndarray, spacing, origin, direction: np.ndarray) -> None:
    """A NRRD / MetaImage written by SimpleITK; ``data`` is (i, j, k), direction 3x3."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.transpose(data, (2, 1, 0)))
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(v) for v in origin])
    image.SetDirection([float(v) for v in np.asarray(direction).ravel()])
    sitk.WriteImage(image, str(path))


def write_dicom_series(
    folder: Path,
    stored: np.ndarray,
    *,
    pixel_spacing=(0.8, 0.7),
    slice_step=2.5,
    origin=(-40.0, -30.0, 100.0),
    orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    slope=1.0,
    intercept=-1024.0,
    series_uid="1.2.826.0.1.3680043.8.498.1",
    series_number=3,
    description="CT head",
    shuffle_seed: int | None = 7,
    positions=None,
    with_pixels=True,
) -> list[Path]:
    """A CT series written by pydicom, one file per slice; ``stored`` is (slice, row, column)
    uint16 stored values (HU = stored * slope + intercept). File names are shuffled against the
    position order when ``shuffle_seed`` is given. Returns the files in position order."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    orientation = np.asarray(orientation, dtype=float)
    normal = np.cross(orientation[:3], orientation[3:])
    count = stored.shape[0]
    if positions is None:
        positions = [np.asarray(origin) + normal * slice_step * k for k in range(count)]
    names = [f"IM{index:04d}.dcm" for index in range(count)]
    if shuffle_seed is not None:
        order = np.random.default_rng(shuffle_seed).permutation(count)
        names = [names[i] for i in order]
    study_uid = "1.2.826.0.1.3680043.8.498.100"
    written = []
    for k in range(count):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / names[k]
        dataset = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        dataset.SOPClassUID = CT_IMAGE_STORAGE
        dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        dataset.Modality = "CT"
        dataset.StudyInstanceUID = study_uid
        dataset.SeriesInstanceUID = series_uid
        dataset.FrameOfReferenceUID = study_uid + ".1"
        dataset.SeriesNumber = series_number
        dataset.SeriesDescription = description
        dataset.InstanceNumber = count - k  # reversed: the order must come from the positions
        dataset.ImagePositionPatient = [float(v) for v in positions[k]]
        dataset.ImageOrientationPatient = [float(v) for v in orientation]
        dataset.PixelSpacing = [float(v) for v in pixel_spacing]
        dataset.SliceThickness = float(slice_step)
        dataset.RescaleSlope = slope
        dataset.RescaleIntercept = intercept
        dataset.Rows, dataset.Columns = stored.shape[1], stored.shape[2]
        dataset.SamplesPerPixel = 1
        dataset.PhotometricInterpretation = "MONOCHROME2"
        dataset.BitsAllocated = 16
        dataset.BitsStored = 16
        dataset.HighBit = 15
        dataset.PixelRepresentation = 0
        if with_pixels:
            dataset.PixelData = np.ascontiguousarray(stored[k].astype(np.uint16)).tobytes()
        dataset.save_as(str(path), enforce_file_format=True)
        written.append(path)
    return written
