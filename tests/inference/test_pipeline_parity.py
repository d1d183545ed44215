"""End-to-end parity of our 2D/3D pipelines with the reference LiteMedSAM scripts.

Runs over every LiteMedSAM fixture; the inputs, boxes and expected ``segs`` come from the file.
The reference ran other code, possibly on another CPU: masks are compared with the tolerances
of tests/tolerances.py (a pixel on the threshold may flip, a carried box may move by a pixel),
never bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import parity_fixture_paths
from napari_swinlitemedsam.cli.main import main
from napari_swinlitemedsam.inference.disk_cache import DiskEmbeddingCache
from napari_swinlitemedsam.inference.pipeline import segment_image_2d
from napari_swinlitemedsam.inference.predictor import BoxPredictor
from napari_swinlitemedsam.inference.volume import REFERENCE_RULES, segment_volume
from tolerances import BOX_SHIFT_PIXELS, assert_labels_agree

FIXTURES = parity_fixture_paths("litemedsam")
FIXTURES_3D = [p for p in FIXTURES if np.load(p)["boxes"].shape[1] == 6]
FIXTURES_2D = [p for p in FIXTURES if np.load(p)["boxes"].shape[1] == 4]
# A 3D fixture propagates through dozens of slices, one real encode each: the slow tier.
FIXTURE_PARAMS = [
    pytest.param(p, marks=pytest.mark.slow) if p in FIXTURES_3D else p for p in FIXTURES
]


@pytest.fixture(scope="module")
def embedding_folder(tmp_path_factory):
    """A disk embedding cache shared by the API and command-line runs of this module: each
    3D fixture's slices are encoded once (one real encode per slice is what makes them slow);
    a run that finds them stored gives the same masks (float32 storage, same encoder)."""
    return tmp_path_factory.mktemp("embeddings")


@pytest.fixture(scope="module")
def predictor(embedding_folder):
    # The reference ran torch float32. ONNX Runtime float32 (a dependency, what most CPUs get
    # for this model) runs the same arithmetic in another order (encoder outputs within ~2e-6 of
    # their range: tests/inference/test_fast_paths.py), well inside this module's tolerances,
    # and encodes these 60-slice stacks ~1.8x faster than torch on one thread.
    predictor = BoxPredictor.from_pretrained(
        "litemedsam", device="cpu", runtime="onnxruntime", precision="fp32"
    )
    predictor.disk_cache = DiskEmbeddingCache(embedding_folder)
    return predictor


@pytest.mark.slow
@pytest.mark.parametrize("path", FIXTURES_3D, ids=[p.name for p in FIXTURES_3D])
def test_volume_propagation_matches_reference_slice_by_slice(predictor, path):
    fixture = np.load(path)
    volume, boxes = fixture["imgs"], fixture["boxes"]
    steps = segment_volume(predictor, volume, boxes, include_end_slices=True, rules=REFERENCE_RULES)
    seen_boxes = np.full(fixture["slice_boxes_256"].shape, -1, dtype=np.int64)
    pixels = np.zeros(fixture["slice_mask_pixels"].shape, dtype=np.int64)
    encoded = 0
    while True:
        try:
            result = next(steps)
        except StopIteration as finished:
            segs = finished.value
            break
        seen_boxes[result.object_index, result.z] = result.box_256
        pixels[result.object_index, result.z] = result.mask.sum()
        encoded = result.encoded_slices
    expected_boxes = fixture["slice_boxes_256"]
    # the same slices visited for every object, their boxes within a pixel of the reference's
    np.testing.assert_array_equal(seen_boxes >= 0, expected_boxes >= 0)
    assert np.abs(seen_boxes - expected_boxes).max() <= BOX_SHIFT_PIXELS
    # per slice, the mask area within 1 % (+2 pixels) of the reference's: boundary flips only
    expected_pixels = fixture["slice_mask_pixels"]
    assert np.all(np.abs(pixels - expected_pixels) <= 0.01 * expected_pixels + 2)
    assert_labels_agree(segs, fixture["segs"])
    # each slice encoded once, whatever the number of objects
    processed = (fixture["slice_boxes_256"] >= 0).all(axis=2).any(axis=0)
    assert encoded == processed.sum()


@pytest.mark.parametrize("path", FIXTURES_2D, ids=[p.name for p in FIXTURES_2D])
def test_2d_case_matches_reference(predictor, path):
    fixture = np.load(path)
    segs = segment_image_2d(predictor, fixture["imgs"], fixture["boxes"])
    assert_labels_agree(segs, fixture["segs"])


@pytest.mark.parametrize("path", FIXTURE_PARAMS, ids=[p.name for p in FIXTURES])
def test_command_line_reproduces_reference_segs(tmp_path, path, embedding_folder):
    fixture = np.load(path)
    name = ("3D_" if fixture["boxes"].shape[1] == 6 else "2D_") + path.stem + ".npz"
    inputs = tmp_path / "in"
    inputs.mkdir()
    extra = {"spacing": fixture["spacing"]} if "spacing" in fixture.files else {}
    np.savez_compressed(inputs / name, imgs=fixture["imgs"], boxes=fixture["boxes"], **extra)
    code = main(
        [
            "segment",
            str(inputs),
            "-o",
            str(tmp_path / "out"),
            "--model",
            "litemedsam",
            "--device",
            "cpu",
            "--reference",
            "--runtime",
            "onnxruntime",
            "--precision",
            "fp32",
            "--cache",
            str(embedding_folder),
        ]
    )
    assert code == 0
    with np.load(tmp_path / "out" / name) as result:
        assert_labels_agree(result["segs"], fixture["segs"])
