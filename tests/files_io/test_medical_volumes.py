"""NIfTI, DICOM, NRRD and MetaImage volumes: read into the display orientation, labels written
back, reopened by the reference library (nibabel / SimpleITK) on the same voxels."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from medical_files import (
    head_like_volume,
    rotation_z,
    write_dicom_series,
    write_itk,
    write_nifti,
)
from napari_swinlitemedsam.io.dicom_series import MultipleSeriesError, list_dicom_series
from napari_swinlitemedsam.io.medical_volumes import (
    MedicalFileError,
    read_medical_volume,
    write_labels_like,
)
from napari_swinlitemedsam.io.volume_geometry import RAS_FROM_LPS

nibabel = pytest.importorskip("nibabel")
sitk = pytest.importorskip("SimpleITK")
pydicom = pytest.importorskip("pydicom")

AFFINE_TOLERANCE = 1e-6


def check_display(volume, source: np.ndarray, source_affine_lps: np.ndarray) -> None:
    """Every display voxel holds the source voxel at the same patient position, and the display
    axes run inferior->superior, anterior->posterior, right->left."""
    geometry = volume.geometry
    np.testing.assert_allclose(geometry.source_affine, source_affine_lps, atol=AFFINE_TOLERANCE)
    display = geometry.display_affine
    assert display[2, 0] > 0 and abs(display[2, 0]) == np.abs(display[:3, 0]).max()  # D: +S
    assert display[1, 1] > 0 and abs(display[1, 1]) == np.abs(display[:3, 1]).max()  # H: +P
    assert display[0, 2] > 0 and abs(display[0, 2]) == np.abs(display[:3, 2]).max()  # W: +L
    grid = np.indices(volume.data.shape).reshape(3, -1)
    world = display @ np.vstack([grid, np.ones(grid.shape[1])])
    source_index = np.linalg.inv(source_affine_lps) @ world
    rounded = np.round(source_index[:3]).astype(int)
    np.testing.assert_allclose(source_index[:3], rounded, atol=1e-6)
    np.testing.assert_array_equal(volume.data.reshape(-1), source[tuple(rounded)])


def paint(volume) -> np.ndarray:
    """What an annotator would paint: label 2 on the bright block, label 1 on one voxel."""
    labels = np.where(volume.data > 500, 2, 0).astype(np.uint8)
    labels[0, 0, 0] = 1
    return labels


def expected_source_labels(volume, source: np.ndarray) -> np.ndarray:
    """:func:`paint`'s labels computed on the source voxels directly."""
    labels = np.where(source > 500, 2, 0).astype(np.uint8)
    marker = np.zeros(volume.data.shape, dtype=bool)
    marker[0, 0, 0] = True
    labels[tuple(np.argwhere(volume.geometry.to_source(marker))[0])] = 1
    return labels


# ------------------------------------------------------------------------------------- NIfTI


@pytest.fixture
def oblique_nifti(tmp_path):
    """x flipped (stored right-to-left... as LAS), rotated 20 degrees, anisotropic, shifted."""
    data = head_like_volume()
    affine = np.eye(4)
    affine[:3, :3] = rotation_z(20) @ np.diag([-0.9, 1.3, 3.0])
    affine[:3, 3] = [10.0, -20.0, 30.0]
    path = tmp_path / "ct.nii.gz"
    write_nifti(path, data, affine, codes=(1, 2))
    return path, data, affine


def test_nifti_oblique_flipped_round_trip(oblique_nifti, tmp_path):
    path, data, affine_ras = oblique_nifti
    volume = read_medical_volume(path)
    check_display(volume, data, RAS_FROM_LPS @ affine_ras)
    assert volume.geometry.is_oblique
    np.testing.assert_allclose(volume.spacing, (3.0, 1.3, 0.9), atol=1e-6)

    out = write_labels_like(tmp_path / "labels.nii.gz", paint(volume), volume.geometry)
    reopened = nibabel.load(str(out))
    source = nibabel.load(str(path))
    assert reopened.shape == data.shape
    np.testing.assert_allclose(reopened.affine, affine_ras, atol=AFFINE_TOLERANCE)
    assert int(reopened.header["qform_code"]) == int(source.header["qform_code"]) == 1
    assert int(reopened.header["sform_code"]) == int(source.header["sform_code"]) == 2
    np.testing.assert_allclose(reopened.get_qform(), source.get_qform(), atol=AFFINE_TOLERANCE)
    np.testing.assert_array_equal(
        np.asanyarray(reopened.dataobj), expected_source_labels(volume, data)
    )


def test_nifti_4d_is_refused(tmp_path):
    path = tmp_path / "fmri.nii.gz"
    nibabel.save(nibabel.Nifti1Image(np.zeros((4, 4, 3, 5), np.int16), np.eye(4)), str(path))
    with pytest.raises(MedicalFileError, match="4D NIfTI.*split"):
        read_medical_volume(path)


def test_nifti_trailing_single_volume_is_read(tmp_path):
    path = tmp_path / "one.nii.gz"
    data = np.arange(4 * 5 * 3, dtype=np.int16).reshape(4, 5, 3, 1)
    nibabel.save(nibabel.Nifti1Image(data, np.diag([1.0, 1.0, 2.0, 1.0])), str(path))
    volume = read_medical_volume(path)
    out = write_labels_like(tmp_path / "l.nii.gz", volume.data > 10, volume.geometry)
    assert nibabel.load(str(out)).shape == (4, 5, 3, 1)


def test_truncated_nifti_gz_is_refused(oblique_nifti, tmp_path):
    path = oblique_nifti[0]
    cut = tmp_path / "cut.nii.gz"
    raw = gzip.decompress(path.read_bytes())
    cut.write_bytes(gzip.compress(raw[: len(raw) - 200]))
    with pytest.raises(MedicalFileError, match="damaged or incomplete"):
        read_medical_volume(cut)


# ---------------------------------------------------------------------------- NRRD / MetaImage


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_itk_round_trip(tmp_path, suffix):
    data = head_like_volume(seed=1)
    direction = rotation_z(-30) @ np.diag([1.0, -1.0, -1.0])  # rotated, y and z flipped
    spacing, origin = (0.6, 0.75, 2.0), (12.5, -40.0, 85.0)
    path = tmp_path / f"scan{suffix}"
    write_itk(path, data, spacing, origin, direction)
    volume = read_medical_volume(path)
    affine = np.eye(4)
    affine[:3, :3] = direction @ np.diag(spacing)
    affine[:3, 3] = origin
    check_display(volume, data, affine)

    out = write_labels_like(tmp_path / f"labels{suffix}", paint(volume), volume.geometry)
    reopened = sitk.ReadImage(str(out))
    source = sitk.ReadImage(str(path))
    assert reopened.GetSize() == source.GetSize()
    np.testing.assert_allclose(reopened.GetSpacing(), source.GetSpacing(), atol=AFFINE_TOLERANCE)
    np.testing.assert_allclose(reopened.GetOrigin(), source.GetOrigin(), atol=AFFINE_TOLERANCE)
    np.testing.assert_allclose(
        reopened.GetDirection(), source.GetDirection(), atol=AFFINE_TOLERANCE
    )
    labels = np.transpose(sitk.GetArrayFromImage(reopened), (2, 1, 0))
    np.testing.assert_array_equal(labels, expected_source_labels(volume, data))


def test_mhd_source_gets_mha_labels_and_nhdr_is_refused(tmp_path):
    from napari_swinlitemedsam.io.medical_volumes import labels_path_for

    assert labels_path_for(tmp_path / "a.mhd", tmp_path, "a").name == "a.mha"
    assert labels_path_for(tmp_path / "a.nii", tmp_path, "a").name == "a.nii.gz"
    assert labels_path_for(tmp_path, tmp_path, "a").name == "a.nii.gz"  # a DICOM folder
    data = head_like_volume(seed=2)
    write_itk(tmp_path / "a.mhd", data, (1, 1, 1), (0, 0, 0), np.eye(3))
    volume = read_medical_volume(tmp_path / "a.mhd")
    with pytest.raises(MedicalFileError, match="one file"):
        write_labels_like(tmp_path / "labels.nhdr", volume.data > 0, volume.geometry)


# ------------------------------------------------------------------------------------- DICOM


def stored_ct(shape=(6, 9, 8), seed=3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    stored = rng.integers(900, 1200, size=shape).astype(np.uint16)
    stored[2:5, 3:7, 2:6] += 800  # "bone" above 500 HU after the -1024 intercept
    return stored


def dicom_affine(orientation, pixel_spacing, step, origin) -> np.ndarray:
    orientation = np.asarray(orientation, dtype=float)
    affine = np.eye(4)
    affine[:3, 0] = orientation[:3] * pixel_spacing[1]
    affine[:3, 1] = orientation[3:] * pixel_spacing[0]
    affine[:3, 2] = np.cross(orientation[:3], orientation[3:]) * step
    affine[:3, 3] = origin
    return affine


@pytest.mark.parametrize(
    "orientation",
    [
        (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),  # axial, head first
        (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0),  # columns right to left, slices stacked downward
        tuple(np.r_[rotation_z(15)[:, 0], rotation_z(15)[:, 1]]),  # oblique axial
    ],
)
def test_dicom_shuffled_series_with_rescale(tmp_path, orientation):
    stored = stored_ct()
    folder = tmp_path / "series"
    write_dicom_series(folder, stored, orientation=orientation, intercept=-1024.0)
    volume = read_medical_volume(folder)
    hu = stored.astype(np.int32) - 1024  # (slice, row, column) in position order
    source = np.transpose(hu, (2, 1, 0))
    affine = dicom_affine(orientation, (0.8, 0.7), 2.5, (-40.0, -30.0, 100.0))
    check_display(volume, source, affine)
    assert volume.data.dtype == np.int16 and volume.modality == "CT"

    # SimpleITK's own DICOM reader (GDCM sorting) agrees on voxels and geometry.
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    reference = reader.Execute()
    np.testing.assert_array_equal(
        np.transpose(sitk.GetArrayFromImage(reference), (2, 1, 0)),
        volume.geometry.to_source(volume.data),
    )
    np.testing.assert_allclose(reference.GetOrigin(), affine[:3, 3], atol=1e-4)

    out = write_labels_like(tmp_path / "labels.nii.gz", paint(volume), volume.geometry)
    reopened = nibabel.load(str(out))
    np.testing.assert_allclose(reopened.affine, RAS_FROM_LPS @ affine, atol=AFFINE_TOLERANCE)
    assert int(reopened.header["sform_code"]) == 1 and int(reopened.header["qform_code"]) == 1
    np.testing.assert_array_equal(
        np.asanyarray(reopened.dataobj), expected_source_labels(volume, source)
    )


def test_dicom_slope_gives_float_hu(tmp_path):
    stored = stored_ct(shape=(3, 4, 5))
    write_dicom_series(tmp_path / "s", stored, slope=0.5, intercept=-1000.25)
    volume = read_medical_volume(tmp_path / "s")
    assert volume.data.dtype == np.float32
    expected = np.transpose(stored * 0.5 - 1000.25, (2, 1, 0))
    np.testing.assert_allclose(volume.geometry.to_source(volume.data), expected, atol=1e-3)


def test_folder_with_two_series_lists_them(tmp_path):
    write_dicom_series(tmp_path / "a", stored_ct(), series_uid="1.2.3.1", series_number=2)
    write_dicom_series(
        tmp_path / "b",
        stored_ct((4, 9, 8)),
        series_uid="1.2.3.2",
        series_number=5,
        description="CT lung",
    )
    found = list_dicom_series(tmp_path)
    assert [info.number for info in found] == [2, 5]
    with pytest.raises(MultipleSeriesError, match="2 DICOM series, pick one") as caught:
        read_medical_volume(tmp_path)
    assert [info.uid for info in caught.value.series] == ["1.2.3.1", "1.2.3.2"]
    chosen = read_medical_volume(tmp_path, series_uid="1.2.3.2")
    assert chosen.data.shape == (4, 9, 8) and chosen.description == "CT lung"


def test_missing_slice_is_refused(tmp_path):
    files = write_dicom_series(tmp_path / "s", stored_ct())
    files[3].unlink()
    with pytest.raises(MedicalFileError, match="1 slice\\(s\\) missing"):
        read_medical_volume(tmp_path / "s")


def test_uneven_spacing_is_refused(tmp_path):
    positions = [(0.0, 0.0, z) for z in (0.0, 2.0, 4.0, 7.0, 9.5, 12.0)]
    write_dicom_series(tmp_path / "s", stored_ct(), positions=positions)
    with pytest.raises(MedicalFileError, match="uneven slice spacing"):
        read_medical_volume(tmp_path / "s")


def test_gantry_tilt_is_refused(tmp_path):
    positions = [(0.0, 0.5 * k, 2.5 * k) for k in range(6)]  # y shifts with z: ~11 degrees
    write_dicom_series(tmp_path / "s", stored_ct(), positions=positions)
    with pytest.raises(MedicalFileError, match="gantry tilt"):
        read_medical_volume(tmp_path / "s")


def test_dicom_without_pixel_data_is_refused(tmp_path):
    write_dicom_series(tmp_path / "s", stored_ct(), with_pixels=False)
    with pytest.raises(MedicalFileError, match="without pixel data"):
        read_medical_volume(tmp_path / "s")


def test_folder_without_dicom_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(MedicalFileError, match="no DICOM image files"):
        read_medical_volume(tmp_path)


def test_compressed_without_decoder_names_the_packages(tmp_path, monkeypatch):
    from napari_swinlitemedsam.io import dicom_series

    write_dicom_series(tmp_path / "s", stored_ct())

    def no_decoder(self):
        raise NotImplementedError("no pixel data handler available")

    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(no_decoder))
    with pytest.raises(MedicalFileError, match="pip install pylibjpeg") as caught:
        read_medical_volume(tmp_path / "s")
    assert dicom_series.DECODER_HINT in str(caught.value)
