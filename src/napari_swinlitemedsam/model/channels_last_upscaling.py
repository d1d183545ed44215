"""SAM's mask upscaling with channels last: what the graph-runtime decoders compute.

The decoders' upscalers double the resolution twice with transposed convolutions of kernel 2
and stride 2. Their outputs do not overlap, so each is one matrix product per input pixel (a
row of channels in, four rows out: one per sub-pixel). Kept as rows of channels, no image-sized
tensor is transposed, LayerNorms run on the last axis, and only the final one-channel mask is
rearranged into its grid (:func:`mask_grid`). Rows of a map at 2x resolution are in the order
(i, j, a, b): input pixel (i, j), then sub-pixel (a, b), i.e. output pixel (2i + a, 2j + b);
after the second doubling (i, j, a, b, c, d) is output pixel (4i + 2a + c, 4j + 2b + d).
"""

from __future__ import annotations

import torch
from torch import nn


def pixel_product(rows: torch.Tensor, convolution: nn.ConvTranspose2d) -> torch.Tensor:
    """A kernel-2 stride-2 transposed convolution (bias included) of (N, P, C_in) rows ->
    (N, 4 * P, C_out) rows, each input row followed by its four sub-pixels (a, b)."""
    weight = convolution.weight  # (C_in, C_out, 2, 2)
    channels_in, channels_out = weight.shape[0], weight.shape[1]
    bias = convolution.bias if convolution.bias is not None else weight.new_zeros(channels_out)
    per_pixel = weight.permute(0, 2, 3, 1).reshape(channels_in, 4 * channels_out)
    out = rows @ per_pixel + bias.repeat(4)
    return out.reshape(rows.shape[0], rows.shape[1] * 4, channels_out)


def upsampled_rows(grid: torch.Tensor) -> torch.Tensor:
    """A (B, C, 2H, 2W) map as (B, 4 * H * W, C) rows in :func:`pixel_product`'s order, so it
    can be added to the rows of a doubled (H, W) map."""
    batch, channels, height, width = grid.shape
    split = grid.reshape(batch, channels, height // 2, 2, width // 2, 2)
    return split.permute(0, 2, 4, 3, 5, 1).reshape(batch, height * width, channels)


def mask_grid(mask_rows: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, 16 * H * W, 1) mask rows after two :func:`pixel_product` doublings of an (H, W)
    map -> (N, 1, 4H, 4W) mask."""
    count = mask_rows.shape[0]
    mask = mask_rows.reshape(count, height, width, 2, 2, 2, 2)  # (i, j, a, b, c, d)
    return mask.permute(0, 1, 3, 5, 2, 4, 6).reshape(count, 1, 4 * height, 4 * width)
