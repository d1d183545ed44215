"""Validating weight files against the registry: the official key listings in tests/data."""

from __future__ import annotations

import pytest
import torch

from conftest import DATA_DIR
from local_http import JUNE_2024_KEYS, OFFICIAL_KEYS, synthetic_state_dict
from napari_swinlitemedsam.model.checkpoint import CheckpointError, bundled_litemedsam_path
from napari_swinlitemedsam.model.registry import MODEL_WEIGHTS, UNUSED_OFFICIAL_KEYS, get_weights
from napari_swinlitemedsam.model.weights_check import validate_weights

SWIN = get_weights("swin-litemedsam")


def listing(path):
    entries = {}
    for line in path.read_text().splitlines():
        key, shape = line.split("\t")
        inner = shape.strip("[] ")
        entries[key] = tuple(int(size) for size in inner.split(",")) if inner else ()
    return entries


@pytest.fixture(scope="module")
def june_state_dict():
    return synthetic_state_dict(JUNE_2024_KEYS)


def saved(tmp_path, state_dict, name="weights.pth"):
    path = tmp_path / name
    torch.save(state_dict, path)
    return path


def test_registry_optional_keys_are_exactly_the_official_listing_minus_june_2024():
    official, june = listing(OFFICIAL_KEYS), listing(JUNE_2024_KEYS)
    extra = {key: shape for key, shape in official.items() if key not in june}
    assert extra == UNUSED_OFFICIAL_KEYS
    assert set(june) <= set(official)


@pytest.mark.parametrize("keys_file,count", [(OFFICIAL_KEYS, 411), (JUNE_2024_KEYS, 403)])
def test_both_official_key_sets_validate(tmp_path, keys_file, count, june_state_dict):
    state_dict = dict(june_state_dict)
    if keys_file == OFFICIAL_KEYS:  # the 8 extra tensors, with the shapes of the listing file
        generator = torch.Generator().manual_seed(0)
        extra = listing(OFFICIAL_KEYS).items() - listing(JUNE_2024_KEYS).items()
        state_dict.update({key: torch.randn(shape, generator=generator) for key, shape in extra})
    assert len(state_dict) == count
    report = validate_weights(saved(tmp_path, {"model": state_dict}), SWIN)
    assert report.network == "swin-litemedsam" and report.keys == 403


def test_missing_key_is_refused(tmp_path, june_state_dict):
    state_dict = dict(june_state_dict)
    del state_dict["mask_decoder.iou_token.weight"]
    with pytest.raises(CheckpointError, match="1 missing keys"):
        validate_weights(saved(tmp_path, state_dict), SWIN)


def test_wrong_shape_is_refused(tmp_path, june_state_dict):
    state_dict = dict(june_state_dict)
    state_dict["mask_decoder.iou_token.weight"] = torch.zeros(2, 256)
    with pytest.raises(CheckpointError, match="wrong shape"):
        validate_weights(saved(tmp_path, state_dict), SWIN)


def test_wrong_shape_of_an_unused_official_key_is_refused(tmp_path, june_state_dict):
    state_dict = dict(june_state_dict)
    state_dict.update({key: torch.zeros(shape) for key, shape in UNUSED_OFFICIAL_KEYS.items()})
    state_dict["mask_decoder.prompt1.linear_layer.bias"] = torch.zeros(6)
    with pytest.raises(CheckpointError, match=r"prompt1\.linear_layer\.bias \(6,\)"):
        validate_weights(saved(tmp_path, state_dict), SWIN)


def test_some_but_not_all_unused_official_keys_are_refused(tmp_path, june_state_dict):
    state_dict = dict(june_state_dict)
    state_dict["mask_decoder.prompt1.linear_layer.bias"] = torch.zeros(5)
    with pytest.raises(CheckpointError, match="1 of the 8 keys"):
        validate_weights(saved(tmp_path, state_dict), SWIN)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_infinity_is_refused(tmp_path, june_state_dict, bad):
    state_dict = dict(june_state_dict)
    key = "image_encoder.neck.0.weight"
    state_dict[key] = state_dict[key].clone()
    state_dict[key].view(-1)[7] = bad
    with pytest.raises(CheckpointError, match="NaN or infinite values in 1 tensors"):
        validate_weights(saved(tmp_path, state_dict), SWIN)


def test_litemedsam_weights_are_refused_as_swin(tmp_path):
    with pytest.raises(CheckpointError, match="holds litemedsam weights"):
        validate_weights(bundled_litemedsam_path(), SWIN)


def test_bundled_litemedsam_matches_its_registry_entry():
    entry = MODEL_WEIGHTS["litemedsam"]
    report = validate_weights(bundled_litemedsam_path(), entry)
    assert report.sha256 == entry.sha256 and report.size_bytes == entry.size_bytes
    assert report.keys == len(listing(DATA_DIR / "litemedsam_keys.txt"))
