"""Swin-LiteMedSAM through the predictor, with the box-derived prompts, against the fixtures.

Everything (weights recipe, image, boxes, seeds, expected masks) comes from each Swin fixture.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import fixture_state_dict, parity_fixture_paths
from napari_swinlitemedsam.evaluation.metrics import dice
from napari_swinlitemedsam.inference.predictor import BoxPredictor
from napari_swinlitemedsam.inference.prompt_random import ReferenceRandomSource
from napari_swinlitemedsam.model.checkpoint import UNUSED_OFFICIAL_PREFIXES
from napari_swinlitemedsam.model.registry import PROMPTS_BOX_POINTS_SCRIBBLE, build_swin_litemedsam

SWIN_FIXTURES = parity_fixture_paths("swin-litemedsam")
SPREAD_SEEDS = range(8)


@pytest.fixture(scope="module", params=SWIN_FIXTURES, ids=[p.name for p in SWIN_FIXTURES])
def encoded(request):
    fixture = np.load(request.param)
    state_dict = {
        k: v
        for k, v in fixture_state_dict(fixture).items()
        if not k.startswith(UNUSED_OFFICIAL_PREFIXES)
    }
    model = build_swin_litemedsam()
    model.load_state_dict(state_dict)
    predictor = BoxPredictor(model, PROMPTS_BOX_POINTS_SCRIBBLE, model_name="swin-litemedsam")
    predictor.set_image(fixture["imgs"])
    return fixture, predictor


def _reference_source(seed: int, torch_state=None) -> ReferenceRandomSource:
    generator = torch.Generator()
    if torch_state is not None:
        generator.set_state(torch.from_numpy(torch_state))
    else:
        generator.manual_seed(seed)
    return ReferenceRandomSource(np.random.RandomState(seed), generator)


def test_seeded_like_the_reference_the_pipeline_reproduces_its_mask(encoded):
    fixture, predictor = encoded
    source = _reference_source(42, fixture["torch_rng_state_before_prompts"])
    prediction = predictor.predict(fixture["boxes"], prompt_source=source)
    reference_logits = fixture["logits_original_size"]
    decisive = np.abs(reference_logits) > 1e-4
    expected = fixture["segs"] > 0
    assert (prediction.masks[0] != expected)[decisive].sum() == 0
    np.testing.assert_allclose(
        prediction.low_res_logits[0], fixture["low_res_logits"][0, 0], atol=1e-4
    )


def test_our_prompts_agree_with_the_reference_within_its_own_spread(encoded):
    """DSC(ours, reference mask) is at least the worst DSC the reference's own seeds reach."""
    fixture, predictor = encoded
    expected = fixture["segs"] > 0
    spread = [
        dice(
            predictor.predict(fixture["boxes"], prompt_source=_reference_source(seed)).masks[0],
            expected,
        )
        for seed in SPREAD_SEEDS
    ]
    ours = predictor.predict(fixture["boxes"]).masks[0]
    assert dice(ours, expected) >= min(spread) - 1e-9, (dice(ours, expected), spread)


def test_same_box_same_mask(encoded):
    fixture, predictor = encoded
    first = predictor.predict(fixture["boxes"]).masks
    second = predictor.predict(fixture["boxes"]).masks
    np.testing.assert_array_equal(first, second)
    batched = predictor.predict(np.repeat(fixture["boxes"], 3, axis=0)).masks
    for mask in batched:
        np.testing.assert_array_equal(mask, first[0])
