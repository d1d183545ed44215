"""The npe2 manifest, the challenge .npz reader and writer, and the sample data commands."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest

import napari_swinlitemedsam
from napari_swinlitemedsam._napari.reader import get_reader
from napari_swinlitemedsam._napari.sample_data import brain_mr, nuclei2d, nuclei3d
from napari_swinlitemedsam._napari.writer import write_labels
from napari_swinlitemedsam.annotation.layer_coordinates import rectangle_to_box

MANIFEST = Path(napari_swinlitemedsam.__file__).parent / "napari.yaml"


def test_manifest_is_valid_and_every_command_resolves():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(MANIFEST)
    assert manifest.name == "napari-swinlitemedsam"
    ids = {command.id for command in manifest.contributions.commands}
    assert all(i.startswith("napari-swinlitemedsam.") for i in ids)
    for command in manifest.contributions.commands:
        module, name = command.python_name.split(":")
        assert callable(getattr(importlib.import_module(module), name)), command.python_name
    assert {w.display_name for w in manifest.contributions.widgets} == {"Box annotator"}
    assert {s.key for s in manifest.contributions.sample_data} == {
        "nuclei2d",
        "nuclei3d",
        "brain_mr",
        "head_ct",
    }


def _layers_by_type(layers):
    return {layer_type: (data, attributes) for data, attributes, layer_type in layers}


def test_2d_case_opens_as_image_boxes_and_ground_truth(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)
    boxes = np.array([[3, 4, 10, 12], [20, 5, 45, 30]])
    gts = np.zeros((40, 50), np.uint8)
    gts[4:13, 3:11] = 1
    path = tmp_path / "2DBox_case.npz"
    np.savez(path, imgs=imgs, boxes=boxes, gts=gts)

    reader = get_reader(str(path))
    assert reader is not None
    layers = _layers_by_type(reader(str(path)))
    image, image_attributes = layers["image"]
    assert image.shape == (40, 50, 3) and image_attributes["rgb"] is True
    assert np.array_equal(layers["labels"][0], gts)
    rectangles, shape_attributes = layers["shapes"]
    assert shape_attributes["shape_type"] == "rectangle"
    assert [rectangle_to_box(r)[1].tolist() for r in rectangles] == boxes.tolist()


def test_3d_case_gets_its_spacing_as_scale_and_boxes_on_their_middle_slice(tmp_path):
    imgs = np.zeros((12, 30, 40), np.int16)
    boxes = np.array([[5, 6, 2, 15, 20, 8]])
    path = tmp_path / "3DBox_case.npz"
    np.savez(path, imgs=imgs, boxes=boxes, spacing=np.array([0.7, 0.7, 2.5]))
    layers = _layers_by_type(get_reader(str(path))(str(path)))
    assert layers["image"][1]["scale"] == (2.5, 0.7, 0.7)
    assert layers["shapes"][1]["scale"] == (2.5, 0.7, 0.7)
    (rectangle,) = layers["shapes"][0]
    z, box = rectangle_to_box(rectangle)
    assert z == 5 and box.tolist() == [5, 6, 15, 20]


def test_prediction_file_opens_as_labels_and_other_files_are_declined(tmp_path):
    segs = np.zeros((6, 7), np.uint8)
    segs[1:3, 2:5] = 2
    prediction = tmp_path / "case.npz"
    np.savez(prediction, segs=segs)
    ((data, _, layer_type),) = get_reader(str(prediction))(str(prediction))
    assert layer_type == "labels" and np.array_equal(data, segs)

    other = tmp_path / "other.npz"
    np.savez(other, weights=np.zeros(3))
    assert get_reader(str(other)) is None
    assert get_reader(str(tmp_path / "image.tif")) is None
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a zip file")
    assert get_reader(str(broken)) is None


def test_writer_round_trip(tmp_path):
    labels = np.zeros((4, 9, 8), np.uint16)
    labels[1, 2:5, 3:6] = 300
    (written,) = write_labels(str(tmp_path / "out"), labels, {})
    assert written.endswith("out.npz")
    with np.load(written) as saved:
        assert saved.files == ["segs"]
        assert saved["segs"].dtype == np.uint16 and np.array_equal(saved["segs"], labels)
    ((data, _, layer_type),) = get_reader(written)(written)
    assert layer_type == "labels" and np.array_equal(data, labels)


@pytest.mark.parametrize(("command", "ndim"), [(nuclei2d, 2), (nuclei3d, 3), (brain_mr, 3)])
def test_sample_data_commands_give_the_real_images_with_their_reference(command, ndim):
    (image, image_attributes, image_type), (labels, labels_attributes, labels_type) = command()
    assert (image_type, labels_type) == ("image", "labels")
    assert image.ndim == ndim and labels.shape == image.shape
    assert labels.max() > 0 and labels_attributes["visible"] is False
    assert image_attributes["metadata"]["licence"]
    if ndim == 3:
        assert len(image_attributes["scale"]) == 3


def test_napari_opens_a_case_and_saves_labels_through_the_plugin(make_napari_viewer, tmp_path):
    import napari

    imgs = np.arange(20 * 30, dtype=np.uint8).reshape(20, 30)
    path = tmp_path / "2D_small.npz"
    np.savez(path, imgs=imgs, boxes=np.array([[1, 2, 5, 6]]))
    viewer = make_napari_viewer()
    viewer.open(str(path), plugin="napari-swinlitemedsam")
    assert [type(layer).__name__ for layer in viewer.layers] == ["Image", "Shapes"]
    labels = viewer.add_labels(np.eye(20, 30, dtype=np.uint8) * 3)
    out = tmp_path / "saved.npz"
    napari.save_layers(str(out), [labels], plugin="napari-swinlitemedsam")
    with np.load(out) as saved:
        assert np.array_equal(saved["segs"], labels.data)
    viewer.open_sample("napari-swinlitemedsam", "nuclei2d")
    assert viewer.layers["nuclei2d"].data.shape == (512, 512)
