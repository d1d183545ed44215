"""``swinlitemedsam embed`` and ``segment --cache``: the cache is filled once, reused later, and
a warm run gives the same labels as the cold one without encoding anything.

The commands run in-process with a stand-in model (instant, counts its encodes); the real
models' timings are measured outside the unit tests (docs/bulk-labelling.md)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_swinlitemedsam.cli import embed as embed_command
from napari_swinlitemedsam.cli import main as cli
from napari_swinlitemedsam.inference.disk_cache import DEFAULT_MAX_BYTES, DiskEmbeddingCache
from napari_swinlitemedsam.inference.predictor import BoxPredictor
from stub_segmenter import stub_predictor


@pytest.fixture
def made_predictors(monkeypatch):
    """Every predictor the commands load, in order (stand-in model, same weights each time)."""
    made = []

    def from_pretrained(cls, name_or_path="litemedsam", device="auto", **options):
        predictor = stub_predictor()
        made.append(predictor)
        return predictor

    monkeypatch.setattr(BoxPredictor, "from_pretrained", classmethod(from_pretrained))
    return made


def write_inputs(folder):
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(folder / "photo.png")
    tifffile.imwrite(folder / "stack.tif", rng.integers(0, 3000, (4, 24, 20), dtype=np.uint16))
    np.savez(
        folder / "3D_case.npz",
        imgs=rng.integers(0, 255, (5, 32, 32), dtype=np.uint8),
        boxes=np.array([[4, 5, 1, 25, 28, 3]]),
    )
    return 1 + 4 + 5  # slices


def test_embed_fills_the_cache_once(tmp_path, made_predictors, capsys):
    slices = write_inputs(tmp_path / "in")
    cache = tmp_path / "cache"
    assert cli.main(["embed", str(tmp_path / "in"), "--cache", str(cache)]) == 0
    assert made_predictors[0].model.encode_calls == slices
    assert len(DiskEmbeddingCache(cache)) == slices
    assert f"{slices} encoded, 0 already cached" in capsys.readouterr().out

    assert cli.main(["embed", str(tmp_path / "in" / "stack.tif"), "--cache", str(cache)]) == 0
    assert made_predictors[1].model.encode_calls == 0
    assert "0 encoded, 4 already cached" in capsys.readouterr().out


def test_segment_with_a_warm_cache_encodes_nothing_and_writes_the_same_labels(
    tmp_path, made_predictors
):
    write_inputs(tmp_path / "in")
    case = str(tmp_path / "in" / "3D_case.npz")
    cache = ["--cache", str(tmp_path / "cache")]
    assert cli.main(["segment", case, "-o", str(tmp_path / "cold"), *cache]) == 0
    assert cli.main(["segment", case, "-o", str(tmp_path / "warm"), *cache]) == 0
    cold, warm = made_predictors
    assert cold.model.encode_calls == 3 and warm.model.encode_calls == 0
    with np.load(tmp_path / "cold" / "3D_case.npz") as cold_file:
        cold_segs = cold_file["segs"]
    with np.load(tmp_path / "warm" / "3D_case.npz") as warm_file:
        np.testing.assert_array_equal(warm_file["segs"], cold_segs)
    assert cold_segs.any()


def test_embed_goes_on_past_unreadable_files_and_reports_them(tmp_path, made_predictors, capsys):
    write_inputs(tmp_path / "in")
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG not really")
    code = cli.main(["embed", str(tmp_path / "in"), "--cache", str(tmp_path / "cache")])
    assert code == 1
    assert "broken.png" in capsys.readouterr().err
    assert len(DiskEmbeddingCache(tmp_path / "cache")) == 10


def test_bad_arguments_exit_with_a_message(tmp_path, made_predictors, capsys):
    assert cli.main(["embed", str(tmp_path / "missing"), "--cache", str(tmp_path / "c")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    write_inputs(tmp_path / "in")
    assert cli.main(["embed", str(tmp_path / "in"), "--cache", str(tmp_path / "file")]) == 2
    assert "folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["embed", str(tmp_path / "in")])  # --cache is required


def test_cache_size_default_matches_the_cache_and_the_parser_stays_light():
    assert embed_command.DEFAULT_CACHE_GB * (1 << 30) == DEFAULT_MAX_BYTES
    probe = (
        "import argparse, sys\n"
        "from napari_swinlitemedsam.cli import embed as embed_command\n"
        "embed_command.add_embed_parser(argparse.ArgumentParser().add_subparsers())\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", probe], check=True)
