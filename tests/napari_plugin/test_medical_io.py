"""CT/MR files through napari: the npe2 reader builds an Image layer in the display orientation
with its geometry; a box gives a mask; the masks layer is saved through the plugin's writer and
reopened by nibabel on the source's voxels."""

from __future__ import annotations

import numpy as np
import pytest

from medical_files import rotation_z, write_dicom_series, write_itk, write_nifti
from napari_helpers import dice, draw_rectangle, gt_box, wait_idle
from napari_swinlitemedsam._napari import medical_io
from napari_swinlitemedsam._napari.medical_io import (
    get_medical_reader,
    read_medical_files,
    write_medical_labels,
)
from napari_swinlitemedsam.io.medical_volumes import MedicalFileError
from napari_swinlitemedsam.io.samples import load_sample
from napari_swinlitemedsam.io.volume_geometry import RAS_FROM_LPS, VolumeGeometry
from screenshot_paths import screenshot_path

nibabel = pytest.importorskip("nibabel")
pytest.importorskip("SimpleITK")
pytest.importorskip("pydicom")

PLUGIN = "napari-swinlitemedsam"
# The real CT sample, 5 slices around the middle of the head, stored as NIfTI the way a scanner
# converter often writes it: columns right-to-left flipped against our display (x stored L->R
# as RAS), rows stored posterior->anterior, slices 4.5 mm apart, shifted origin.
FIRST, LAST, KEY = 16, 20, 2
# A box around the intracranial reference on one slice: the mask follows the inner skull (the
# reference is an approximate threshold that leaves out the ventricles); 0.8 still fails for a
# mask in the wrong place or on the wrong voxels after writing.
MIN_DSC = 0.8


@pytest.fixture(scope="module")
def ct_nifti(tmp_path_factory):
    sample = load_sample("head_ct")
    display = sample.image[FIRST : LAST + 1]  # (z S, y P, x L): our display orientation
    reference = sample.labels[FIRST : LAST + 1] == 2
    # Store as RAS (x grows to the right, y anterior, z superior): flip x and y.
    stored = np.ascontiguousarray(display[:, ::-1, ::-1].transpose(2, 1, 0))
    affine = np.diag([0.957, 0.957, 4.5, 1.0])
    affine[:3, 3] = [-110.0, -95.0, 40.0]
    path = tmp_path_factory.mktemp("ct") / "head_ct.nii.gz"
    write_nifti(path, stored, affine, codes=(1, 1))
    return path, display, reference, stored, affine


def test_reader_claims_medical_files_and_dicom_folders_only(tmp_path, ct_nifti):
    assert get_medical_reader(str(ct_nifti[0])) is read_medical_files
    write_dicom_series(tmp_path / "dicom", np.full((3, 4, 5), 1000, np.uint16))
    assert get_medical_reader(str(tmp_path / "dicom")) is read_medical_files
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "a.txt").write_text("x")
    assert get_medical_reader(str(tmp_path / "plain")) is None
    assert get_medical_reader(str(tmp_path / "case.npz")) is None


def test_nifti_layer_has_display_orientation_scale_translate_and_geometry(ct_nifti):
    path, display, _, _, affine = ct_nifti
    ((data, attributes, layer_type),) = read_medical_files(str(path))
    assert layer_type == "image"
    np.testing.assert_array_equal(data, display)  # flips undone: anterior on top, L on right
    np.testing.assert_allclose(attributes["scale"], (4.5, 0.957, 0.957))
    lps = RAS_FROM_LPS @ affine
    corner = lps @ np.array([display.shape[2] - 1, display.shape[1] - 1, 0, 1.0])  # voxel 0
    np.testing.assert_allclose(attributes["translate"], corner[[2, 1, 0]], atol=1e-6)
    assert isinstance(attributes["metadata"]["geometry"], VolumeGeometry)
    assert attributes["units"] == ("mm", "mm", "mm")


def test_itk_layer_written_back_as_itk(tmp_path):
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    source = tmp_path / "scan.mha"
    write_itk(source, data, (0.5, 0.6, 2.0), (1.0, 2.0, 3.0), rotation_z(90))
    ((image, attributes, _),) = read_medical_files(str(source))
    labels = (image > 60).astype(np.uint8)
    (written,) = write_medical_labels(str(tmp_path / "labels"), labels, attributes)
    assert written.endswith("labels.mha")
    import SimpleITK as sitk

    reopened = np.transpose(sitk.GetArrayFromImage(sitk.ReadImage(written)), (2, 1, 0))
    np.testing.assert_array_equal(reopened, (data > 60).astype(np.uint8))


def test_several_series_ask_which_one(tmp_path, monkeypatch):
    write_dicom_series(tmp_path / "a", np.full((3, 4, 5), 1000, np.uint16), series_uid="1.2.1")
    write_dicom_series(
        tmp_path / "b", np.full((2, 4, 5), 1100, np.uint16), series_uid="1.2.2", series_number=9
    )
    asked = []

    def pick_second(several):
        asked.append([info.uid for info in several.series])
        return several.series[1].uid

    monkeypatch.setattr(medical_io, "choose_series", pick_second)
    ((data, attributes, _),) = read_medical_files(str(tmp_path))
    assert asked == [["1.2.1", "1.2.2"]]
    assert data.shape == (2, 4, 5) and int(data.max()) == 1100 - 1024
    assert attributes["contrast_limits"] == medical_io.CT_DISPLAY_LIMITS

    monkeypatch.setattr(medical_io, "choose_series", lambda several: None)  # cancelled
    with pytest.raises(MedicalFileError, match="pick one"):
        read_medical_files(str(tmp_path))


def test_labels_without_geometry_are_refused_with_advice(make_napari_viewer):
    make_napari_viewer()
    with pytest.raises(MedicalFileError, match="save them as .npz or .tif"):
        write_medical_labels("out.nii.gz", np.zeros((2, 3, 4), np.uint8), {"metadata": {}})


@pytest.mark.slow  # loads the real model and encodes a slice: ~20 s idle, minutes on a busy CPU
def test_open_ct_box_mask_save_reopen(make_napari_viewer, qtbot, ct_nifti, tmp_path):
    from napari_swinlitemedsam._napari.widget import BoxAnnotatorWidget

    path, display, reference, stored, affine = ct_nifti
    viewer = make_napari_viewer(show=True)  # shown: the screenshot for the user guide
    viewer.window.resize(1400, 860)
    (image,) = viewer.open(str(path), plugin=PLUGIN)  # what File > Open does with the file
    np.testing.assert_array_equal(image.data, display)
    widget = BoxAnnotatorWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Box annotator")
    annotator = widget.annotator
    viewer.dims.set_current_step(0, KEY)
    draw_rectangle(annotator.boxes, gt_box(reference[KEY]), slice_index=KEY)
    wait_idle(qtbot, annotator)
    masks = annotator.labels
    assert dice(masks.data[KEY] > 0, reference[KEY]) > MIN_DSC
    assert not masks.data[np.arange(len(display)) != KEY].any()
    qtbot.wait(300)  # let the canvas and the dock settle
    path_png = screenshot_path("ct_nifti_annotated.png", tmp_path)
    picture = viewer.screenshot(str(path_png), canvas_only=False)
    assert picture.shape[0] > 400 and picture.shape[1] > 800

    target = tmp_path / "head_ct_masks.nii.gz"
    viewer.layers.selection = {masks}
    written = viewer.layers.save(str(target), selected=True, plugin=PLUGIN)
    assert written == [str(target)]
    reopened = nibabel.load(str(target))
    assert reopened.shape == stored.shape
    np.testing.assert_allclose(reopened.affine, affine, atol=1e-6)
    saved = np.asanyarray(reopened.dataobj)
    source_reference = reference[:, ::-1, ::-1].transpose(2, 1, 0)
    key_stored = saved[:, :, KEY] > 0
    assert dice(key_stored, source_reference[:, :, KEY]) > MIN_DSC
    np.testing.assert_array_equal(saved, masks.data[:, ::-1, ::-1].transpose(2, 1, 0))

    (back,) = viewer.open(str(target), plugin=PLUGIN)  # reopened in napari: same display voxels
    np.testing.assert_array_equal(np.asarray(back.data), masks.data)
