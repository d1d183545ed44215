"""Resolving and loading weights: every bad file gets a clear CheckpointError."""

from __future__ import annotations

import pickle

import pytest
import torch

from napari_swinlitemedsam.model.checkpoint import (
    MODEL_DIR_ENV,
    CheckpointError,
    load_model,
    read_state_dict,
    resolve_weights,
    save_checkpoint,
)
from napari_swinlitemedsam.model.registry import build_swin_litemedsam


@pytest.fixture(scope="module")
def swin_state_dict():
    torch.manual_seed(0)
    return build_swin_litemedsam().state_dict()


def test_missing_swin_checkpoint_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv(MODEL_DIR_ENV, str(tmp_path / "models"))
    with pytest.raises(CheckpointError) as info:
        resolve_weights("swin-litemedsam")
    message = str(info.value)
    assert str(tmp_path / "models" / "Swin_LiteMedSAM.pth") in message
    assert "RuochenGao/Swin_LiteMedSAM" in message


def test_swin_checkpoint_found_in_model_dir(tmp_path, monkeypatch, swin_state_dict):
    monkeypatch.setenv(MODEL_DIR_ENV, str(tmp_path))
    torch.save(swin_state_dict, tmp_path / "Swin_LiteMedSAM.pth")
    loaded = load_model("swin-litemedsam", device="cpu")
    assert loaded.spec.name == "swin-litemedsam"


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no weight file"):
        load_model(tmp_path / "nope.pth")


def test_truncated_file(tmp_path, swin_state_dict):
    path = tmp_path / "full.pth"
    torch.save(swin_state_dict, path)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_model(cut)


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="does not hold a state dict"):
        read_state_dict(path)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as handle:
        pickle.dump({"image_encoder.x": _RunsCode(str(marker))}, handle)
    with pytest.raises(CheckpointError):
        load_model(path)
    assert not marker.exists()


def test_sam_vit_b_checkpoint_is_named(tmp_path):
    path = tmp_path / "sam_vit_b.pth"
    torch.save(
        {
            "image_encoder.pos_embed": torch.zeros(1, 64, 64, 768),
            "image_encoder.blocks.0.attn.qkv.weight": torch.zeros(3, 3),
        },
        path,
    )
    with pytest.raises(CheckpointError, match="SAM/MedSAM ViT-B"):
        load_model(path)


def test_missing_and_extra_keys_are_named(tmp_path, swin_state_dict):
    broken = dict(swin_state_dict)
    broken.pop("mask_decoder.iou_token.weight")
    broken["mask_decoder.surprise.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    torch.save(broken, path)
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    assert "mask_decoder.iou_token.weight" in str(info.value)
    assert "mask_decoder.surprise.weight" in str(info.value)


def test_wrong_shape_is_named(tmp_path, swin_state_dict):
    broken = dict(swin_state_dict)
    broken["mask_decoder.iou_token.weight"] = torch.zeros(2, 256)
    path = tmp_path / "shape.pth"
    torch.save(broken, path)
    with pytest.raises(CheckpointError, match="wrong shape"):
        load_model(path)


def test_half_precision_and_wrapped_dict_load(tmp_path, swin_state_dict):
    half = {k: v.half() if v.is_floating_point() else v for k, v in swin_state_dict.items()}
    path = tmp_path / "half.pth"
    torch.save({"model": half, "epoch": 3}, path)
    loaded = load_model(path, device="cpu")
    assert any("half-precision" in note for note in loaded.notes)
    assert loaded.model.image_encoder.neck[0].weight.dtype == torch.float32


def test_round_trip_of_our_saved_checkpoint(tmp_path, swin_state_dict):
    model = build_swin_litemedsam()
    model.load_state_dict(swin_state_dict)
    path = tmp_path / "ours.pth"
    save_checkpoint(model, path)
    loaded = load_model(path, device="cpu").model.state_dict()
    for key, value in swin_state_dict.items():
        assert torch.equal(loaded[key], value), key
    assert not list(tmp_path.glob(".*tmp*"))


def test_model_name_must_match_file_variant(tmp_path, swin_state_dict, monkeypatch):
    monkeypatch.setenv(MODEL_DIR_ENV, str(tmp_path))
    torch.save(
        {
            "image_encoder.pos_embed": torch.zeros(1, 64, 64, 1024),
            "image_encoder.blocks.0.attn.qkv.weight": torch.zeros(1),
        },
        tmp_path / "Swin_LiteMedSAM.pth",
    )
    with pytest.raises(CheckpointError, match="ViT-L"):
        load_model("swin-litemedsam")


def test_unknown_device_is_explained():
    with pytest.raises(CheckpointError, match="unknown device"):
        load_model("litemedsam", device="toaster")
