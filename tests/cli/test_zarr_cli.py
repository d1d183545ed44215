"""``segment`` and ``embed`` on zarr stacks: boxes from a file, labels written slice by slice
into a zarr store equal to the in-memory result, slices encoded into the disk cache.

The commands run in-process with the instant stand-in model of tests/stub_segmenter.py."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from napari_swinlitemedsam.cli import main as cli
from napari_swinlitemedsam.cohort.zarr_cases import BoxesFileError, read_boxes_file
from napari_swinlitemedsam.inference.disk_cache import DiskEmbeddingCache
from napari_swinlitemedsam.inference.generators import run_to_end
from napari_swinlitemedsam.inference.predictor import BoxPredictor
from napari_swinlitemedsam.inference.volume import segment_volume
from stub_segmenter import stub_predictor

BOXES = np.array([[10, 12, 3, 40, 44, 9], [30, 30, 6, 55, 58, 12]])  # overlapping on z 6-9


@pytest.fixture
def made_predictors(monkeypatch):
    made = []

    def from_pretrained(cls, name_or_path="litemedsam", device="auto", **options):
        made.append(stub_predictor())
        return made[-1]

    monkeypatch.setattr(BoxPredictor, "from_pretrained", classmethod(from_pretrained))
    return made


def uint8_stack(path, depth: int = 16, size: int = 64) -> np.ndarray:
    """A (D, H, W) uint8 zarr store (passed to the model unchanged, so the lazy and in-memory
    runs see the same pixels) with two bright balls."""
    z, y, x = np.mgrid[:depth, :size, :size]
    balls = ((z - 6) ** 2 / 9 + ((y - 28) ** 2 + (x - 25) ** 2) / 150 < 1) | (
        (z - 9) ** 2 / 9 + ((y - 44) ** 2 + (x - 42) ** 2) / 120 < 1
    )
    rng = np.random.default_rng(1)
    volume = np.clip(rng.normal(60, 10, balls.shape) + 150 * balls, 0, 255).astype(np.uint8)
    store = zarr.open_array(
        str(path), mode="w", shape=volume.shape, chunks=(1, size, size), dtype=np.uint8
    )
    store[:] = volume
    return volume


def test_segment_writes_zarr_labels_equal_to_the_in_memory_run(tmp_path, made_predictors):
    volume = uint8_stack(tmp_path / "cells.zarr")
    np.savetxt(tmp_path / "boxes.csv", BOXES, delimiter=",", header="x0,y0,z0,x1,y1,z1")
    args = ["segment", str(tmp_path / "cells.zarr"), "-o", str(tmp_path / "out")]
    assert cli.main([*args, "--boxes", str(tmp_path / "boxes.csv")]) == 0
    written = zarr.open_array(str(tmp_path / "out" / "cells_masks.zarr"), mode="r")
    assert (
        written.chunks == (1, 64, 64)
        and not (tmp_path / "out" / "cells_masks.zarr.partial").exists()
    )
    in_memory = run_to_end(segment_volume(stub_predictor(), volume, BOXES))
    # Same model, same pixels, same propagation: the slice-by-slice writes (later box wins)
    # give exactly the label volume pasted in memory.
    np.testing.assert_array_equal(written[:], in_memory)
    assert {1, 2} <= set(np.unique(in_memory))

    assert cli.main([*args, "--boxes", str(tmp_path / "boxes.csv"), "--skip-done"]) == 0
    assert made_predictors[-1].model.encode_calls == 0, "a finished store is not redone"


def test_segment_on_a_zarr_stack_without_boxes_is_refused(tmp_path, capsys, made_predictors):
    uint8_stack(tmp_path / "cells.zarr")
    assert cli.main(["segment", str(tmp_path / "cells.zarr"), "-o", str(tmp_path / "out")]) == 2
    assert "--boxes" in capsys.readouterr().err


def test_boxes_files_are_read_or_explained(tmp_path):
    np.save(tmp_path / "b.npy", BOXES.astype(float))
    np.testing.assert_array_equal(read_boxes_file(tmp_path / "b.npy"), BOXES)
    (tmp_path / "bad.csv").write_text("1,2,3\n")
    with pytest.raises(BoxesFileError, match=r"\(N, 6\)"):
        read_boxes_file(tmp_path / "bad.csv")
    with pytest.raises(BoxesFileError, match="no such"):
        read_boxes_file(tmp_path / "none.csv")


def test_embed_encodes_every_slice_of_a_zarr_stack(tmp_path, made_predictors, capsys):
    uint8_stack(tmp_path / "cells.zarr", depth=6)
    cache = tmp_path / "cache"
    assert cli.main(["embed", str(tmp_path / "cells.zarr"), "--cache", str(cache)]) == 0
    assert made_predictors[0].model.encode_calls == 6
    assert len(DiskEmbeddingCache(cache)) == 6
