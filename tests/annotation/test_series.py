"""Image series bookkeeping: listing, states, resume, atomic and skip-unchanged saves, formats,
prefetch order."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_swinlitemedsam.annotation import series, series_listing
from napari_swinlitemedsam.annotation.series import (
    ImageSeries,
    ItemState,
    PrefetchTarget,
    SeriesError,
    list_series_items,
    neighbours_to_prefetch,
)
from napari_swinlitemedsam.io import image_files
from napari_swinlitemedsam.io.challenge_io import save_segs
from napari_swinlitemedsam.io.image_files import ImageFileError, read_image
from napari_swinlitemedsam.io.label_files import LabelFileError, load_labels, save_labels


def make_folder(folder: Path) -> list[Path]:
    """Three images (grey PNG, RGB JPEG-free PNG, TIFF stack) plus files a series must ignore."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (20, 30), dtype=np.uint8)).save(folder / "b_grey.png")
    Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(folder / "a_rgb.png")
    tifffile.imwrite(folder / "c_stack.tif", rng.integers(0, 4000, (5, 16, 18), dtype=np.uint16))
    (folder / "notes.txt").write_text("not an image")
    (folder / ".c_stack.tif.x1.tmp").write_bytes(b"left over")
    (folder / "sub").mkdir(exist_ok=True)
    return [folder / "a_rgb.png", folder / "b_grey.png", folder / "c_stack.tif"]


# ---------------------------------------------------------------- listing and reading


def test_listing_folders_globs_and_files_in_order_without_duplicates(tmp_path):
    expected = make_folder(tmp_path / "images")
    assert list_series_items(tmp_path / "images") == expected
    assert list_series_items(str(tmp_path / "images" / "*.png")) == expected[:2]
    listed = list_series_items([expected[2], tmp_path / "images"])
    assert listed == [expected[2], expected[0], expected[1]]


def test_listing_errors_say_what_is_wrong(tmp_path, monkeypatch):
    with pytest.raises(SeriesError, match="no such file or folder"):
        list_series_items(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SeriesError, match="no images found"):
        list_series_items(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(SeriesError, match="not a supported image"):
        list_series_items(tmp_path / "notes.txt")
    (tmp_path / "scan.nii.gz").write_bytes(b"")
    monkeypatch.setattr(series_listing, "nibabel_available", lambda: False)
    with pytest.raises(SeriesError, match="pip install nibabel"):
        list_series_items(tmp_path / "scan.nii.gz")


def test_reading_pictures_stacks_and_challenge_cases(tmp_path):
    paths = make_folder(tmp_path)
    rgb, grey, stack = (read_image(p) for p in paths)
    assert rgb.data.shape == (20, 30, 3) and not rgb.is_stack
    assert grey.data.shape == (20, 30) and not grey.is_stack
    assert stack.data.shape == (5, 16, 18) and stack.is_stack and stack.data.dtype == np.uint16
    case = tmp_path / "3D_case.npz"
    np.savez(case, imgs=np.zeros((4, 8, 8), np.uint8), boxes=np.zeros((0, 6)), spacing=[2.0, 1, 1])
    loaded = read_image(case)
    assert loaded.is_stack and loaded.spacing == (2.0, 1.0, 1.0)
    with pytest.raises(ImageFileError, match="supported"):
        read_image(tmp_path / "notes.txt")
    (tmp_path / "broken.tif").write_bytes(b"II*\x00broken")
    with pytest.raises(ImageFileError, match="cannot be read"):
        read_image(tmp_path / "broken.tif")


def test_base_names_strip_double_suffixes():
    assert image_files.base_name("x/ct_01.nii.gz") == "ct_01"
    assert image_files.base_name("cell.TIF") == "cell"
    assert image_files.base_name("2D_case.npz") == "2D_case"


def test_clashing_base_names_are_refused(tmp_path):
    make_folder(tmp_path)
    tifffile.imwrite(tmp_path / "a_rgb.tif", np.zeros((4, 4), np.uint8))
    with pytest.raises(SeriesError, match="a_rgb"):
        ImageSeries.open(tmp_path, tmp_path / "out")


# ---------------------------------------------------------------- states, saving and resuming


def test_states_move_and_resume_where_the_user_stopped(tmp_path):
    items = make_folder(tmp_path / "images")
    out = tmp_path / "out"
    first = ImageSeries(items, out)
    assert first.current == 0 and first.states() == [ItemState.UNTOUCHED] * 3
    labels = np.zeros((20, 30), np.uint8)
    labels[2:5, 3:9] = 1
    first.go_to(0)
    assert first.save(0, labels)
    first.mark_done(0)
    first.go_to(first.neighbour(+1))
    first.go_to(first.neighbour(+1))
    assert first.current == 2

    reopened = ImageSeries(items, out)
    assert reopened.current == 2
    assert reopened.states() == [ItemState.DONE, ItemState.IN_PROGRESS, ItemState.IN_PROGRESS]
    np.testing.assert_array_equal(reopened.saved_labels(0), labels)
    assert reopened.saved_labels(1) is None
    reopened.current = 2
    assert reopened.neighbour(-1) == 1
    reopened.current = 1
    assert reopened.neighbour(-1, skip_done=True) is None  # item 0 is done
    assert reopened.neighbour(+1) == 2 and ImageSeries(items, out).first_unfinished() == 1
    progress = json.loads((out / series.PROGRESS_FILE).read_text())
    assert progress["current"] == "c_stack" and progress["items"]["a_rgb"]["state"] == "done"


def test_saving_unchanged_labels_does_not_touch_the_file(tmp_path):
    items = make_folder(tmp_path / "images")
    chosen = ImageSeries(items, tmp_path / "out")
    labels = np.zeros((5, 16, 18), np.uint16)
    labels[1:3, 4:8, 4:9] = 2
    assert chosen.save(2, labels) is True
    path = chosen.label_path(2)
    before = path.stat().st_mtime_ns
    assert chosen.save(2, labels.astype(np.int64)) is False  # same values, other dtype
    assert ImageSeries(items, tmp_path / "out").save(2, labels) is False  # also after reopening
    assert path.stat().st_mtime_ns == before
    labels[0, 0, 0] = 3
    assert chosen.save(2, labels) is True
    np.testing.assert_array_equal(tifffile.imread(path), labels)
    path.unlink()  # deleted behind the series' back: written again
    assert chosen.save(2, labels) is True and path.is_file()


def test_labels_found_in_outdir_without_progress_file_are_loaded(tmp_path):
    items = make_folder(tmp_path / "images")
    out = tmp_path / "out"
    save_segs(out / "b_grey.npz", np.ones((20, 30), np.uint8))
    opened = ImageSeries(items, out, label_format="tiff")
    assert opened.state(1) == ItemState.IN_PROGRESS
    np.testing.assert_array_equal(opened.saved_labels(1), np.ones((20, 30)))
    assert opened.current == 0


@pytest.mark.parametrize("label_format", ["tiff", "npz"])
def test_label_formats_round_trip(tmp_path, label_format):
    labels = np.zeros((3, 6, 7), np.int32)
    labels[1, 2:4, 1:5] = 300
    path = tmp_path / ("x" + {"tiff": ".tif", "npz": ".npz"}[label_format])
    save_labels(path, labels, label_format)
    loaded = load_labels(path, label_format)
    assert loaded.dtype == np.uint16
    np.testing.assert_array_equal(loaded, labels)
    with pytest.raises(LabelFileError, match="integers"):
        save_labels(path, labels.astype(float), label_format)
    with pytest.raises(LabelFileError, match="label format"):
        save_labels(path, labels, "png")


def test_nifti_labels_keep_affine_spacing_and_axis_order(tmp_path):
    nibabel = pytest.importorskip("nibabel")
    volume = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)  # (x, y, z)
    affine = np.diag([0.5, 0.7, 2.5, 1.0])  # RAS: x to the right, y anterior, z superior
    affine[:3, 3] = [10, -4, 3]
    nibabel.save(nibabel.Nifti1Image(volume, affine), str(tmp_path / "ct.nii.gz"))
    loaded = read_image(tmp_path / "ct.nii.gz")
    assert loaded.is_stack and loaded.data.shape == (6, 5, 4)  # (z, y, x)
    assert loaded.spacing == pytest.approx((2.5, 0.7, 0.5))
    # Display orientation: columns run right-to-left and rows anterior-to-posterior, so both
    # in-plane axes are flipped against RAS storage.
    assert loaded.data[2, 5 - 1 - 3, 4 - 1 - 1] == volume[1, 3, 2]
    chosen = ImageSeries([tmp_path / "ct.nii.gz"], tmp_path / "out", label_format="nifti")
    labels = np.zeros((6, 5, 4), np.uint8)
    labels[2, 5 - 1 - 3, 4 - 1 - 1] = 7
    assert chosen.save(0, labels)
    written = nibabel.load(str(chosen.label_path(0)))
    np.testing.assert_allclose(written.affine, affine)
    assert np.asanyarray(written.dataobj)[1, 3, 2] == 7 and written.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(chosen.saved_labels(0), labels)


def test_auto_format_writes_each_item_in_its_own_format(tmp_path):
    nibabel = pytest.importorskip("nibabel")
    sitk = pytest.importorskip("SimpleITK")
    pytest.importorskip("pydicom")
    from medical_files import write_dicom_series, write_itk

    folder = tmp_path / "scans"
    folder.mkdir()
    data = np.zeros((6, 5, 4), np.int16)  # (x, y, z)
    data[1:3, 2:4, 1:3] = 500
    nibabel.save(
        nibabel.Nifti1Image(data, np.diag([-1.0, 1.0, 2.0, 1.0])), str(folder / "a.nii.gz")
    )
    write_itk(folder / "b.mha", data, (1, 1, 2), (5, 6, 7), np.eye(3))
    tifffile.imwrite(folder / "c.tif", np.zeros((8, 9), np.uint8))
    stored = np.full((3, 4, 5), 1024, np.uint16)
    stored[1, 1:3, 1:4] = 2000
    write_dicom_series(folder / "d_dicom", stored)
    opened = ImageSeries.open(folder, tmp_path / "out")  # label format "auto" by default
    assert opened.names == ["a", "b", "c", "d_dicom"]
    assert [opened.label_path(i).name for i in range(4)] == [
        "a.nii.gz",
        "b.mha",
        "c.tif",
        "d_dicom.nii.gz",
    ]
    for index in range(4):
        image = opened.read(index)
        labels = (image.data > 100).astype(np.uint8)
        assert opened.save(index, labels, image)
        np.testing.assert_array_equal(opened.saved_labels(index), labels)
    written_nifti = nibabel.load(str(opened.label_path(0)))
    np.testing.assert_array_equal(np.asanyarray(written_nifti.dataobj), (data > 100))
    np.testing.assert_allclose(written_nifti.affine, np.diag([-1.0, 1.0, 2.0, 1.0]))
    written_mha = sitk.ReadImage(str(opened.label_path(1)))
    assert written_mha.GetOrigin() == (5.0, 6.0, 7.0)
    np.testing.assert_array_equal(
        np.transpose(sitk.GetArrayFromImage(written_mha)), (data > 100).astype(np.uint8)
    )
    dicom_labels = np.asanyarray(nibabel.load(str(opened.label_path(3))).dataobj)
    np.testing.assert_array_equal(dicom_labels, np.transpose(stored > 1124))  # HU > 100


def test_a_killed_save_leaves_the_previous_labels_and_progress_intact(tmp_path):
    items = make_folder(tmp_path / "images")
    out = tmp_path / "out"
    chosen = ImageSeries(items, out)
    old = np.ones((20, 30), np.uint8)
    chosen.save(1, old)
    progress_before = (out / series.PROGRESS_FILE).read_text()
    # The child writes new labels completely into a temporary file, announces it, and waits
    # where the rename would happen; it is killed there.
    child = textwrap.dedent(
        """
        import os, sys, time
        import numpy as np
        from napari_swinlitemedsam.annotation.series import ImageSeries

        def wait_instead_of_renaming(source, destination):
            print(source, flush=True)
            time.sleep(120)

        chosen = ImageSeries(sys.argv[1:4], sys.argv[4])
        os.replace = wait_instead_of_renaming
        chosen.save(1, np.full((20, 30), 5, np.uint8))
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", child, *map(str, items), str(out)], stdout=subprocess.PIPE, text=True
    )
    try:
        temp = Path(process.stdout.readline().strip())
        assert temp.parent == out and temp.name.startswith(".b_grey.tif.")
        # the new data were completely written before the rename
        np.testing.assert_array_equal(tifffile.imread(temp), np.full((20, 30), 5))
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        process.stdout.close()
    assert process.returncode == -signal.SIGKILL
    reopened = ImageSeries(items, out)
    np.testing.assert_array_equal(reopened.saved_labels(1), old)
    assert (out / series.PROGRESS_FILE).read_text() == progress_before
    assert reopened.save(1, old) is False  # the leftover temporary file changes nothing
    assert reopened.save(1, old + 1) is True


def test_damaged_progress_file_gives_a_clear_error(tmp_path):
    items = make_folder(tmp_path / "images")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / series.PROGRESS_FILE).write_text("{not json")
    with pytest.raises(SeriesError, match="move it away"):
        ImageSeries(items, tmp_path / "out")


# ---------------------------------------------------------------- prefetch order


def test_prefetch_neighbouring_slices_first_then_the_next_item():
    targets = neighbours_to_prefetch(
        3, 10, z=5, depth=7, slice_radius=2, direction=-1, next_item_z=4
    )
    assert targets == [
        PrefetchTarget(3, 4),
        PrefetchTarget(3, 6),
        PrefetchTarget(3, 3),
        PrefetchTarget(2, 4),
    ]  # slice 7 is beyond the stack; item 2 lies in the direction of the last move


def test_prefetch_skips_items_and_stops_at_the_ends():
    assert neighbours_to_prefetch(0, 4, skip_items={1, 2}) == [PrefetchTarget(3, None)]
    assert neighbours_to_prefetch(3, 4) == []
    assert neighbours_to_prefetch(0, 4, direction=-1) == []
    with pytest.raises(ValueError):
        neighbours_to_prefetch(0, 4, direction=0)
