"""Labelling an image series in a real napari viewer, with the real bundled LiteMedSAM weights, on
crops of the real bundled samples written as TIFF and PNG files.

That a writer killed in the middle of a save leaves the previous labels file and progress file
intact is tested headless in ``tests/test_series.py``
(``test_a_killed_save_leaves_the_previous_labels_and_progress_intact``); the widget saves through
the same :meth:`ImageSeries.save`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image as PILImage

import napari_swinlitemedsam._napari.series_session as session_module
from napari_helpers import (
    MODEL_TIMEOUT_MS,
    dice,
    draw_rectangle,
    gt_box,
    no_worker_threads,
    wait_idle,
)
from napari_swinlitemedsam._napari.widget import BoxAnnotatorWidget
from napari_swinlitemedsam.annotation.series import ItemState
from napari_swinlitemedsam.io.label_files import load_labels
from napari_swinlitemedsam.io.samples import load_sample
from screenshot_paths import screenshot_path

# The crops are encoded at their own resolution and intensity range, so DSC differs from the
# whole image's; the widget's mask must equal the headless prediction and be clearly right.
MIN_DSC = 0.7
# Crops of the 2D nuclei sample, each holding whole nuclei: (rows, cols, nucleus label).
CROP_A = (slice(256, 512), slice(256, 512), 175)
CROP_B = (slice(128, 384), slice(128, 384), 106)


@pytest.fixture(scope="module")
def nuclei():
    return load_sample("nuclei2d")


def write_2d_series(folder, nuclei):
    """a.tif (uint16) and b.png (8-bit) crops; returns the truth mask of each item's nucleus."""
    folder.mkdir()
    truths = []
    for name, (rows, cols, label) in (("a.tif", CROP_A), ("b.png", CROP_B)):
        crop = nuclei.image[rows, cols]
        if name.endswith(".tif"):
            tifffile.imwrite(folder / name, crop)
        else:
            PILImage.fromarray(crop.astype(np.uint8)).save(folder / name)
        truths.append(nuclei.labels[rows, cols] == label)
    return truths


def open_widget(make_napari_viewer, viewer=None):
    viewer = viewer or make_napari_viewer()
    widget = BoxAnnotatorWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Box annotator")
    return viewer, widget


def segment(qtbot, annotator, truth, min_dsc: float = MIN_DSC) -> np.ndarray:
    """Draw the box of ``truth`` and wait for its mask; returns that object's mask."""
    before = int(annotator.labels.data.max())
    draw_rectangle(annotator.boxes, gt_box(truth))
    qtbot.waitUntil(lambda: int(annotator.labels.data.max()) > before, timeout=MODEL_TIMEOUT_MS)
    wait_idle(qtbot, annotator)
    mask = annotator.labels.data == annotator.labels.data.max()
    assert dice(mask, truth) > min_dsc
    predictor = annotator.predictor
    predictor.set_image(np.asarray(annotator.image.data))
    assert np.array_equal(mask, predictor.predict(gt_box(truth)[None]).masks[0])
    return mask


def close(widget, qtbot) -> None:
    assert widget.close_annotator()
    qtbot.waitUntil(no_worker_threads, timeout=MODEL_TIMEOUT_MS)


@pytest.mark.slow
def test_labels_survive_moving_closing_and_reopening_the_series(
    make_napari_viewer, qtbot, nuclei, tmp_path
):
    truths = write_2d_series(tmp_path / "images", nuclei)
    outdir = tmp_path / "labels"
    viewer, widget = open_widget(make_napari_viewer)
    panel = widget.series_panel
    assert panel.open_series([tmp_path / "images"], outdir, "tiff")
    session, annotator = panel.session, widget.annotator
    assert session.current == 0 and annotator.image is viewer.layers["a"]
    assert annotator.labels is viewer.layers["a masks"]
    assert panel.item_list.count() == 2 and panel.item_list.item(0).text().startswith("✎")

    mask_a = segment(qtbot, annotator, truths[0])
    annotator.labels.data[0:3, 0:3] = 9  # painted by hand
    painted_a = annotator.labels.data.copy()
    assert panel.step(1)  # saves item a first
    assert np.array_equal(load_labels(outdir / "a.tif", "tiff"), painted_a)
    assert session.current == 1 and [layer.name for layer in viewer.layers] == [
        "b",
        "b masks",
        "b clicks",
        "b boxes",
    ]
    assert not annotator.labels.data.any()
    segment(qtbot, annotator, truths[1])
    labels_b = annotator.labels.data.copy()

    assert panel.step(-1)
    assert np.array_equal(annotator.labels.data, painted_a)  # item a's labels are back
    assert np.array_equal(load_labels(outdir / "b.tif", "tiff"), labels_b)
    assert panel.step(-1) is False and session.current == 0  # the first item: no move
    panel.done_box.click()
    assert session.series.state(0) == ItemState.DONE and panel.item_list.item(0).text().startswith(
        "✓"
    )
    annotator.labels.data[mask_a] = 0  # erased by hand after the last save
    edited_a = annotator.labels.data.copy()
    close(widget, qtbot)  # closing the widget saves
    assert np.array_equal(load_labels(outdir / "a.tif", "tiff"), edited_a)

    # A new widget on the same folder resumes on item a, all labels there.
    _, again = open_widget(make_napari_viewer)
    assert again.series_panel.open_series([tmp_path / "images"], outdir, "tiff")
    resumed = again.series_panel.session
    assert resumed.current == 0 and np.array_equal(again.annotator.labels.data, edited_a)
    assert again.series_panel.step(1)
    assert np.array_equal(again.annotator.labels.data, labels_b)
    progress = json.loads((outdir / "series_progress.json").read_text())
    assert progress["current"] == "b" and progress["items"]["a"]["state"] == "done"
    # Skipping done items: Previous from b has nowhere to go.
    again.series_panel.skip_done_box.setChecked(True)
    assert again.series_panel.step(-1) is False and resumed.current == 1
    close(again, qtbot)
    # Each item: instance map, semantic map, object table (no class list: none was made).
    assert sorted(p.name for p in outdir.iterdir()) == [
        "a.tif",
        "a_objects.csv",
        "a_semantic.tif",
        "b.tif",
        "b_objects.csv",
        "b_semantic.tif",
        "series_progress.json",
    ]


def test_a_failed_save_does_not_move_and_loses_nothing(
    make_napari_viewer, qtbot, nuclei, tmp_path, monkeypatch
):
    write_2d_series(tmp_path / "images", nuclei)
    outdir = tmp_path / "labels"
    errors = []
    monkeypatch.setattr(session_module, "show_error", errors.append)
    viewer, widget = open_widget(make_napari_viewer)
    panel = widget.series_panel
    assert panel.open_series([tmp_path / "images"], outdir, "tiff")
    session = panel.session
    assert panel.autosave_timer.isActive() and panel.autosave_timer.interval() == 120_000
    panel.autosave_timer.timeout.emit()  # a tick with nothing painted writes no empty file
    assert not (outdir / "a.tif").exists()
    labels = widget.annotator.labels
    labels.data[10:20, 10:20] = 3  # hand painting, no model needed
    painted = labels.data.copy()

    def failing_save(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(session.series, "save", failing_save)
    assert panel.step(1) is False
    assert session.current == 0 and widget.annotator.labels is labels
    assert np.array_equal(labels.data, painted) and viewer.layers["a masks"] is labels
    assert len(errors) == 1 and "could NOT be saved" in errors[0] and "No space left" in errors[0]
    assert not (outdir / "a.tif").exists()
    panel.autosave()  # the timer's save fails the same way, and says so
    assert len(errors) == 2

    monkeypatch.undo()  # the disk has room again
    monkeypatch.setattr(session_module, "show_error", errors.append)
    panel.autosave_timer.timeout.emit()  # the timer's tick saves the painting
    assert session.last_saved and np.array_equal(load_labels(outdir / "a.tif", "tiff"), painted)
    assert panel.step(1) and session.current == 1
    assert np.array_equal(load_labels(outdir / "a.tif", "tiff"), painted)

    # Unchanged masks are not written again (by autosave or by moving).
    stamp = (outdir / "a.tif").stat().st_mtime_ns
    assert panel.step(-1)
    panel.autosave()
    assert session.last_saved is False and (outdir / "a.tif").stat().st_mtime_ns == stamp

    # A labels file that cannot be read is not replaced by empty masks: the move is refused.
    (outdir / "b.tif").write_bytes(b"not a tiff")
    assert panel.step(1) is False and session.current == 0
    assert "Cannot open b" in errors[-1] and (outdir / "b.tif").read_bytes() == b"not a tiff"
    close(widget, qtbot)


@pytest.mark.slow
def test_the_next_item_is_encoded_ahead_and_reused(make_napari_viewer, qtbot, tmp_path):
    """Stacks: the neighbouring slices of the current stack and the first shown (middle) slice of
    the next stack are encoded in the background; moving there, the first box decodes with no
    encoder call."""
    sample = load_sample("nuclei3d")
    folder = tmp_path / "stacks"
    folder.mkdir()
    crops = {"s1": sample.image[20:25, 64:192, 64:192], "s2": sample.image[30:35, 64:192, 64:192]}
    for name, stack in crops.items():
        tifffile.imwrite(folder / f"{name}.tif", stack)
    truth_s2 = sample.labels[32, 64:192, 64:192]
    object_label = np.bincount(truth_s2[truth_s2 > 0]).argmax()
    truth = truth_s2 == object_label

    _, widget = open_widget(make_napari_viewer)
    panel, annotator = widget.series_panel, widget.annotator
    assert panel.open_series([folder], tmp_path / "labels", "tiff")
    assert annotator.current_slice() == 2  # the middle slice is shown first
    session = panel.session
    qtbot.waitUntil(
        lambda: (
            session.prefetched is not None
            and session.prefetched.encoded == {2}
            and not annotator.runner.busy
        ),
        timeout=MODEL_TIMEOUT_MS,
    )
    assert annotator.scheduler.encoded == {0, 1, 2, 3, 4}  # the neighbours within two slices

    # Which slices of which image really ran the encoder (not found in the cache)?
    predictor = annotator.predictor
    encoder_runs, encoded_keys = [], []
    run_encoder, encode = predictor._run_encoder, predictor.encode
    predictor._run_encoder = lambda tensor: encoder_runs.append(1) or run_encoder(tensor)

    def recording_encode(image, key=None):
        runs = len(encoder_runs)
        result = encode(image, key)
        if len(encoder_runs) > runs:
            encoded_keys.append(key)
        return result

    predictor.encode = recording_encode
    assert panel.step(1)
    assert annotator.image.name == "s2" and annotator.current_slice() == 2
    draw_rectangle(annotator.boxes, gt_box(truth), slice_index=2)
    qtbot.waitUntil(lambda: annotator.labels.data[2].any(), timeout=MODEL_TIMEOUT_MS)
    wait_idle(qtbot, annotator)
    # Only the new neighbours were encoded (in the background), never the slice of the box.
    s2_key = annotator.image_key
    assert s2_key[0] == "series-item" and s2_key[1].endswith("s2.tif")
    assert sorted(z for key, z in encoded_keys if key == s2_key) == [0, 1, 3, 4]
    assert annotator.scheduler.encoded == {0, 1, 2, 3, 4}
    assert dice(annotator.labels.data[2] > 0, truth) > 0.8
    close(widget, qtbot)


def test_the_annotate_command_opens_a_series_with_a_disk_cache(
    make_napari_viewer, qtbot, nuclei, tmp_path, monkeypatch
):
    import napari

    from napari_swinlitemedsam._napari.launch import open_viewer

    # The command's viewer, made by the test fixture (which registers the plugin once per test).
    monkeypatch.setattr(napari, "Viewer", lambda title="": make_napari_viewer(title=title))
    from napari_swinlitemedsam.cli.main import build_parser, prepare_annotate

    write_2d_series(tmp_path / "images", nuclei)
    outdir, cache_dir = tmp_path / "labels", tmp_path / "cache"
    args = build_parser().parse_args(
        [
            "annotate",
            str(tmp_path / "images"),
            "-o",
            str(outdir),
            "--format",
            "npz",
            "--cache",
            str(cache_dir),
            "--skip-done",
        ]
    )
    series, disk_cache = prepare_annotate(args)
    assert series.label_format == "npz" and disk_cache.folder == cache_dir
    viewer, widget = open_viewer(args.files, args.sample, series, args.skip_done, disk_cache)
    try:
        annotator = widget.annotator
        assert widget.series_panel.session.skip_done
        assert annotator.image is viewer.layers["a"]
        assert [layer.name for layer in viewer.layers] == ["a", "a masks", "a clicks", "a boxes"]
        qtbot.waitUntil(lambda: len(disk_cache) >= 1, timeout=MODEL_TIMEOUT_MS)
        assert annotator.predictor.disk_cache is disk_cache
        assert widget.series_panel.cache_edit.text() == str(cache_dir)
        # The widget's cache field: another folder, then none.
        assert widget.series_panel.set_cache_folder(str(tmp_path / "other cache"))
        assert annotator.predictor.disk_cache.folder == tmp_path / "other cache"
        assert widget.series_panel.set_cache_folder("") and annotator.predictor.disk_cache is None
        (tmp_path / "a file").write_text("")
        assert not widget.series_panel.set_cache_folder(str(tmp_path / "a file"))
        annotator.labels.data[5:9, 5:9] = 4
        painted = annotator.labels.data.copy()
    finally:
        viewer.close()  # closing the window saves the masks
    qtbot.waitUntil(no_worker_threads, timeout=MODEL_TIMEOUT_MS)
    assert np.array_equal(load_labels(outdir / "a.npz", "npz"), painted)
    # Without files, -o is refused with a message.
    with pytest.raises(ValueError, match="give the images"):
        prepare_annotate(build_parser().parse_args(["annotate", "-o", str(outdir)]))


@pytest.mark.slow  # a shown window and real encodes, for the docs image
def test_screenshot_of_a_series_being_labelled(
    make_napari_viewer, qtbot, nuclei, tmp_path, monkeypatch
):
    """A series of three fields: the first done, the second being labelled, the third untouched."""
    monkeypatch.chdir(tmp_path)  # relative folder names in the picture
    folder = Path("fields")
    folder.mkdir()
    crops = {
        "field_01": (slice(0, 256), slice(0, 256)),
        "field_02": (slice(256, 512), slice(256, 512)),
        "field_03": (slice(0, 256), slice(256, 512)),
    }
    for name, (rows, cols) in crops.items():
        tifffile.imwrite(folder / f"{name}.tif", nuclei.image[rows, cols])
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1400, 900)
    _, widget = open_widget(make_napari_viewer, viewer)
    panel, annotator = widget.series_panel, widget.annotator
    widget.help_label.setVisible(False)  # room for the series list in the picture
    assert panel.open_series([folder], Path("labels"), "tiff")
    field_01 = nuclei.labels[crops["field_01"]]
    for label in (106, 7):
        segment(qtbot, annotator, field_01 == label, min_dsc=0.5)
    panel.done_box.click()
    assert panel.step(1)
    field_02 = nuclei.labels[crops["field_02"]]
    for label in (175, 149, 88):
        segment(qtbot, annotator, field_02 == label, min_dsc=0.5)
    annotator.boxes.selected_data = set()
    texts = [panel.item_list.item(i).text() for i in range(3)]
    assert [text[0] for text in texts] == ["✓", "✎", "·"]
    qtbot.wait(300)
    path = screenshot_path("series_labelling.png", tmp_path)
    picture = viewer.screenshot(str(path), canvas_only=False)
    assert picture.shape[0] > 400 and picture.shape[1] > 800
    close(widget, qtbot)


def test_annotate_with_a_bad_series_exits_with_a_message_before_opening_napari(tmp_path, capsys):
    from napari_swinlitemedsam.cli.main import main

    assert main(["annotate", str(tmp_path / "missing"), "-o", str(tmp_path / "out")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["annotate", str(tmp_path / "empty"), "-o", str(tmp_path / "out")]) == 2
    assert "no images found" in capsys.readouterr().err
