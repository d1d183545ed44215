"""A lazy (zarr-backed dask) stack in the real napari viewer: its masks go to a zarr store on
disk, a box's mask is written there and undone there, and the store survives closing the viewer.

The model is the instant stand-in of tests/stub_segmenter.py: its masks mean nothing, but they
depend on the pixels and the box, which is all the storage path needs.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import zarr

from napari_helpers import draw_rectangle, wait_idle
from napari_swinlitemedsam._napari.widget import BoxAnnotatorWidget
from napari_swinlitemedsam.annotation import slice_work
from napari_swinlitemedsam.inference.volume_slices import SAMPLE_SLICES
from stub_segmenter import stub_predictor

DEPTH, SIZE, KEY = 24, 96, 11
BOX = np.array([30, 28, 70, 66])  # x0, y0, x1, y1 around the ball


@pytest.fixture
def stub(monkeypatch):
    predictor = stub_predictor()
    monkeypatch.setattr(slice_work, "load_predictor", lambda *args, **kwargs: (predictor, 0.0))
    return predictor


def ball_stack(path) -> da.Array:
    """A (D, H, W) uint16 zarr store (one chunk per slice) with a bright ball, opened as dask
    (as napari-ome-zarr does)."""
    z, y, x = np.mgrid[:DEPTH, :SIZE, :SIZE]
    ball = (z - KEY) ** 2 / 36 + ((y - 47) ** 2 + (x - 50) ** 2) / 300 < 1
    rng = np.random.default_rng(0)
    volume = (rng.normal(200, 20, ball.shape) + 1500 * ball).astype(np.uint16)
    store = zarr.open_array(
        str(path), mode="w", shape=volume.shape, chunks=(1, SIZE, SIZE), dtype=volume.dtype
    )
    store[:] = volume
    return da.from_zarr(str(path))


def open_annotator(viewer, stack, masks_folder):
    widget = BoxAnnotatorWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Box annotator")
    widget.storage_row.set_folder(masks_folder)
    viewer.add_image(stack, name="stack")  # attached when added: the masks follow the switch
    viewer.dims.set_current_step(0, KEY)
    return widget


def on_disk(path) -> np.ndarray:
    return zarr.open_array(str(path), mode="r")[:]


def test_box_mask_undo_on_a_dask_layer_write_through_a_zarr_store(
    make_napari_viewer, qtbot, tmp_path, stub
):
    stack = ball_stack(tmp_path / "stack.zarr")
    viewer = make_napari_viewer()
    widget = open_annotator(viewer, stack, tmp_path / "masks")
    annotator = widget.annotator
    store = tmp_path / "masks" / "stack_masks.zarr"
    assert annotator.masks_store == store
    assert isinstance(annotator.labels.data, zarr.Array), "masks of a lazy stack are on disk"
    assert str(store) in widget.storage_row.where_label.text()

    draw_rectangle(annotator.boxes, BOX, slice_index=KEY)
    wait_idle(qtbot, annotator)
    written = on_disk(store)
    mask = written[KEY] == 1
    assert mask.any(), "the box's mask is in the store"
    assert not written[:KEY].any() and not written[KEY + 1 :].any(), "only the box's slice"
    x0, y0, x1, y1 = BOX
    assert not mask[:y0].any() and not mask[y1 + 1 :].any() and not mask[:, x1 + 1 :].any()
    # The image was read lazily: the intensity sample and the box's slice, kept in the
    # read-ahead (slices encoded ahead may add a few more; never the whole stack).
    prepared = annotator.prepared_image
    assert not prepared.in_memory and prepared.reads < SAMPLE_SLICES + 6 < DEPTH
    assert "Memory: embeddings" in widget.storage_row.memory_label.text()
    assert "read-ahead" in widget.storage_row.memory_label.text()

    annotator.labels.undo()
    assert not on_disk(store).any(), "undo takes the mask back out of the store"
    annotator.labels.redo()
    np.testing.assert_array_equal(on_disk(store), written)


def test_a_zarr_masks_store_survives_closing_and_reopening_the_viewer(
    make_napari_viewer, qtbot, tmp_path, stub
):
    stack = ball_stack(tmp_path / "stack.zarr")
    viewer = make_napari_viewer()
    widget = open_annotator(viewer, stack, tmp_path / "masks")
    draw_rectangle(widget.annotator.boxes, BOX, slice_index=KEY)
    wait_idle(qtbot, widget.annotator)
    before = np.asarray(widget.annotator.labels.data[:])
    assert before.any()
    viewer.close()

    again = make_napari_viewer()
    widget = open_annotator(again, da.from_zarr(str(tmp_path / "stack.zarr")), tmp_path / "masks")
    annotator = widget.annotator
    np.testing.assert_array_equal(np.asarray(annotator.labels.data[:]), before)
    # A new box takes a new id: object 1 of the last session is not overwritten.
    again.dims.set_current_step(0, KEY + 2)
    draw_rectangle(annotator.boxes, BOX, slice_index=KEY + 2)
    wait_idle(qtbot, annotator)
    now = on_disk(tmp_path / "masks" / "stack_masks.zarr")
    np.testing.assert_array_equal(now[KEY], before[KEY])
    assert set(np.unique(now[KEY + 2])) <= {0, 2} and (now[KEY + 2] == 2).any()


def test_the_annotate_command_opens_a_zarr_store_lazily_with_its_masks_beside_it(
    make_napari_viewer, qtbot, tmp_path, stub, monkeypatch
):
    import napari

    from napari_swinlitemedsam._napari.launch import open_viewer

    # The command's viewer, made by the test fixture (which registers the plugin once per test:
    # a second plain napari.Viewer in one test process registers its commands twice).
    monkeypatch.setattr(napari, "Viewer", lambda title="": make_napari_viewer(title=title))
    ball_stack(tmp_path / "embryo.zarr")
    budget = 2 * SIZE * SIZE  # two uint8 slices (annotate --read-ahead-mb)
    viewer, widget = open_viewer(
        [str(tmp_path / "embryo.zarr")], "nuclei2d", read_ahead_bytes=budget
    )
    try:
        image = widget.annotator.image
        assert image is viewer.layers["embryo.zarr"]
        assert isinstance(image.data, da.Array), "the store is opened lazily"
        assert widget.annotator.masks_store == tmp_path / "embryo_masks.zarr"
        assert (tmp_path / "embryo_masks.zarr").is_dir()
        wait_idle(qtbot, widget.annotator)
        read_ahead = widget.annotator.prepared_image.read_ahead
        assert read_ahead.max_bytes == budget and 0 < read_ahead.nbytes <= budget
    finally:
        assert widget.close_annotator()
        viewer.close()
