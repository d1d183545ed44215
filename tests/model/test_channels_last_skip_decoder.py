"""Swin-LiteMedSAM's skip decoder channels-last: the model's own decode, rearranged."""

from __future__ import annotations

import pytest
import torch

from napari_swinlitemedsam.model.channels_last_skip_decoder import (
    ChannelsLastSkipDecoder,
    check_skip_decoder,
    skip_rows,
)
from napari_swinlitemedsam.model.channels_last_upscaling import mask_grid, upsampled_rows
from napari_swinlitemedsam.model.registry import build_litemedsam, build_swin_litemedsam
from napari_swinlitemedsam.model.segmenter import ImageFeatures

# The same float32 products summed in another order: logits differ by ~1e-6 of their range;
# a wrong rearrangement (a swapped sub-pixel, a skip term on the wrong pixel) is off by O(1).
LOGIT_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def model():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        built = build_swin_litemedsam().eval()
        # the spread of trained weights: LayerNorm weights of 1 and biases of 0 would hide a
        # misplaced scale or bias
        with torch.no_grad():
            for parameter in built.mask_decoder.parameters():
                parameter.add_(0.05 * torch.randn_like(parameter))
        return built


def _features(model, generator) -> ImageFeatures:
    skips = [
        torch.randn(1, 128, 128, 128, generator=generator),
        torch.randn(1, 160, 64, 64, generator=generator),
        torch.randn(1, 320, 64, 64, generator=generator),
        torch.randn(1, 320, 64, 64, generator=generator),
    ]
    with torch.inference_mode():
        context = model.mask_decoder.skip_context(skips)
    return ImageFeatures(torch.randn(1, 256, 64, 64, generator=generator), context)


@pytest.mark.parametrize(("count", "clicks"), [(1, 0), (3, 2)])
def test_channels_last_decoding_equals_the_models_decode(model, count, clicks):
    generator = torch.Generator().manual_seed(count)
    features = _features(model, generator)
    corners = torch.rand(count, 2, 2, generator=generator) * 255
    boxes = torch.cat([corners.min(1).values, corners.max(1).values], dim=1)
    points = torch.rand(count, 4 + clicks, 2, generator=generator) * 255
    labels = torch.ones(count, 4 + clicks, dtype=torch.int64)
    labels[:, 4:] = 0  # negative clicks after the derived points
    masks = (torch.rand(count, 1, 256, 256, generator=generator) > 0.97).float()
    with torch.inference_mode():
        expected_logits, expected_iou = model.decode(features, boxes, points, labels, masks)
        coarse, fine = skip_rows(features.skip_context)
        logits, iou = ChannelsLastSkipDecoder(model)(
            features.embedding, coarse, fine, boxes, points, labels, masks
        )
    assert logits.shape == expected_logits.shape == (count, 1, 256, 256)
    scale = float(expected_logits.abs().max())
    torch.testing.assert_close(logits, expected_logits, rtol=0, atol=LOGIT_TOLERANCE * scale)
    torch.testing.assert_close(iou, expected_iou, rtol=0, atol=1e-4)


def test_row_orders_round_trip():
    grid = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    rows = upsampled_rows(grid)  # (2, 64, 3) in (i, j, a, b) order of a doubled 4x4 map
    assert rows.shape == (2, 64, 3)
    # row (i, j, a, b) holds grid pixel (2i + a, 2j + b)
    i, j, a, b = 1, 2, 1, 0
    assert torch.equal(rows[:, ((i * 4 + j) * 2 + a) * 2 + b], grid[:, :, 2 * i + a, 2 * j + b])
    # mask_grid of rows after two doublings of a 2x2 map places (i, j, a, b, c, d) at
    # (4i + 2a + c, 4j + 2b + d)
    flat = torch.arange(2 * 2 * 16, dtype=torch.float32).reshape(1, 64, 1)
    placed = mask_grid(flat, 2, 2)
    i, j, a, b, c, d = 1, 0, 0, 1, 1, 1
    index = ((((i * 2 + j) * 2 + a) * 2 + b) * 2 + c) * 2 + d
    assert placed[0, 0, 4 * i + 2 * a + c, 4 * j + 2 * b + d] == index


def test_models_without_a_skip_decoder_are_refused():
    with pytest.raises(ValueError, match="skip decoder"):
        check_skip_decoder(build_litemedsam())
