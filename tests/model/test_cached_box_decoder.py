"""The box-only decoder that keeps the image's share: the model's own decode, rearranged."""

from __future__ import annotations

import pytest
import torch

from napari_swinlitemedsam.model.cached_box_decoder import (
    BoxDecoderContext,
    CachedBoxDecoder,
    check_box_only_decoder,
)
from napari_swinlitemedsam.model.registry import build_litemedsam, build_swin_litemedsam
from napari_swinlitemedsam.model.segmenter import ImageFeatures

# The same float32 products summed in another order: logits differ by ~1e-6 of their range;
# a wrong rearrangement (a swapped sub-pixel, a missing term) is off by O(1).
LOGIT_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def model():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        built = build_litemedsam().eval()
        # random weights with the spread of trained ones: the upscaler's bias and LayerNorm
        # weights start at 0 and 1, which would hide a misplaced bias or scale
        with torch.no_grad():
            for parameter in built.mask_decoder.parameters():
                parameter.add_(0.05 * torch.randn_like(parameter))
        return built


@pytest.mark.parametrize("count", [1, 4])
def test_cached_decoding_equals_the_models_decode(model, count):
    generator = torch.Generator().manual_seed(count)
    embedding = torch.randn(1, 256, 64, 64, generator=generator)
    corners = torch.rand(count, 2, 2, generator=generator) * 255
    boxes = torch.cat([corners.min(1).values, corners.max(1).values], dim=1)
    with torch.inference_mode():
        expected_logits, expected_iou = model.decode(ImageFeatures(embedding), boxes)
        context = BoxDecoderContext(model)(embedding)
        logits, iou = CachedBoxDecoder(model)(*context, boxes)
    assert logits.shape == expected_logits.shape == (count, 1, 256, 256)
    assert iou.shape == expected_iou.shape == (count, 1)
    scale = float(expected_logits.abs().max())
    torch.testing.assert_close(logits, expected_logits, rtol=0, atol=LOGIT_TOLERANCE * scale)
    torch.testing.assert_close(iou, expected_iou, rtol=0, atol=1e-4)


def test_the_context_has_the_documented_shapes(model):
    with torch.inference_mode():
        image, keys, values, queries = BoxDecoderContext(model)(torch.zeros(1, 256, 64, 64))
    assert image.shape == (1, 64 * 64, 256)
    assert keys.shape == values.shape == queries.shape == (1, 8, 64 * 64, 16)


def test_models_whose_decoder_needs_more_than_a_box_are_refused():
    with pytest.raises(ValueError, match="decode in torch"):
        check_box_only_decoder(build_swin_litemedsam())
