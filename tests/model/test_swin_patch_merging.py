"""Swin-LiteMedSAM's patch merging as a strided convolution equals its definition: space-to-depth
in ``torch.nn.Unfold``'s order (channel-major, then the row and column inside the patch) and the
Linear, which is how the official code computes it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from napari_swinlitemedsam.model.swin_encoder import PatchMerging


def unfold_then_linear(merge: PatchMerging, x: torch.Tensor) -> torch.Tensor:
    """The definition: (B, C, H, W) -> (B, H/f, W/f, out) by Unfold, transpose and Linear."""
    batch, _, height, width = x.shape
    f = merge.factor
    patches = F.unfold(x, kernel_size=f, stride=f)  # (B, C*f*f, L), channel-major
    merged = patches.transpose(1, 2).reshape(batch, height // f, width // f, -1)
    return merge.linear(merged)


@pytest.mark.parametrize("factor", [1, 2])
@pytest.mark.parametrize("channels_last", [False, True])
def test_patch_merging_equals_unfold_then_linear(factor, channels_last):
    torch.manual_seed(0)
    merge = PatchMerging(in_channels=6, out_channels=10, factor=factor).eval()
    x = torch.randn(2, 6, 8, 12)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ours = merge(x)
        expected = unfold_then_linear(merge, x)
    assert ours.shape == (2, 8 // factor, 12 // factor, 10)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)


def test_patch_merging_output_is_contiguous_for_the_blocks():
    """The blocks take (B, H/f, W/f, out) as it comes; a strided view would cost a copy."""
    merge = PatchMerging(in_channels=4, out_channels=8, factor=2).eval()
    with torch.no_grad():
        assert merge(torch.randn(1, 4, 16, 16)).is_contiguous()


def test_patch_merging_trains_its_linear():
    merge = PatchMerging(in_channels=4, out_channels=8, factor=2)
    merge(torch.randn(1, 4, 8, 8)).square().sum().backward()
    assert merge.linear.weight.grad is not None and merge.linear.weight.grad.abs().sum() > 0
    assert merge.linear.bias.grad is not None
