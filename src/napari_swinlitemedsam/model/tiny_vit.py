"""TinyViT image encoder in LiteMedSAM's configuration, with SAM's neck.

LiteMedSAM feeds a (B, 3, 256, 256) image in [0, 1] and gets a (B, 256, 64, 64) embedding. The
stem keeps full resolution (1×1 convolutions); stage 0 (MBConv) runs at 256×256, the merge after
stage 0 and 1 halves the grid, and merges that lead to 320 channels keep the grid (stride 1).
Token tensors are (B, H*W, C) in row-major order; feature maps are (B, C, H, W).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from napari_swinlitemedsam.model.common import Conv2dBN, LayerNorm2d

STRIDE_ONE_MERGE_DIMS = (320, 448, 576)
"""Output widths whose patch merging keeps the resolution (as the LiteMedSAM encoder does)."""


class Stem(nn.Module):
    """Two 1×1 Conv+BN with GELU between: (B, in, H, W) -> (B, embed_dim, H, W)."""

    def __init__(self, in_channels: int, embed_dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            Conv2dBN(in_channels, embed_dim // 2, 1),
            nn.GELU(),
            Conv2dBN(embed_dim // 2, embed_dim, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual: 1×1 expand, 3×3 depthwise, 1×1 project, residual, GELU. (B, C, H, W)."""

    def __init__(self, channels: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(channels * expand_ratio)
        self.conv1 = Conv2dBN(channels, hidden, 1)
        self.conv2 = Conv2dBN(hidden, hidden, 3, stride=1, padding=1, groups=hidden)
        self.conv3 = Conv2dBN(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.gelu(self.conv1(x))
        out = F.gelu(self.conv2(out))
        out = self.conv3(out)
        return F.gelu(out + x)


class PatchMerging(nn.Module):
    """1×1 conv, depthwise 3×3 conv (stride 2, or 1 for widths in ``STRIDE_ONE_MERGE_DIMS``), 1×1 conv.

    Input (B, C, H, W) or tokens (B, H*W, C) on ``input_resolution``; output tokens (B, H'*W', out_dim).
    """

    def __init__(self, input_resolution: tuple[int, int], dim: int, out_dim: int) -> None:
        super().__init__()
        self.input_resolution = input_resolution
        self.stride = 1 if out_dim in STRIDE_ONE_MERGE_DIMS else 2
        self.conv1 = Conv2dBN(dim, out_dim, 1)
        self.conv2 = Conv2dBN(out_dim, out_dim, 3, stride=self.stride, padding=1, groups=out_dim)
        self.conv3 = Conv2dBN(out_dim, out_dim, 1)

    @property
    def output_resolution(self) -> tuple[int, int]:
        height, width = self.input_resolution
        return (height - 1) // self.stride + 1, (width - 1) // self.stride + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            height, width = self.input_resolution
            x = x.reshape(x.shape[0], height, width, -1).permute(0, 3, 1, 2)
        x = F.gelu(self.conv1(x))
        x = F.gelu(self.conv2(x))
        x = self.conv3(x)
        return x.flatten(2).transpose(1, 2)


def relative_offset_index(window: int) -> torch.Tensor:
    """(window², window²) index of |Δrow| * window + |Δcol| between every pair of window cells.

    Matches the order in which TinyViT numbers the distinct offsets (row-major over (|Δrow|, |Δcol|)).
    """
    rows = torch.arange(window).repeat_interleave(window)
    cols = torch.arange(window).repeat(window)
    delta_rows = (rows[:, None] - rows[None, :]).abs()
    delta_cols = (cols[:, None] - cols[None, :]).abs()
    return delta_rows * window + delta_cols


class WindowAttention(nn.Module):
    """Pre-norm multi-head attention over (B, window², C) with a learned per-offset bias per head.

    Parameters: ``norm``, ``qkv`` (per head: query, key, value blocks of C // heads channels),
    ``proj``, ``attention_biases`` (heads, window²). The offset index is a non-persistent buffer.
    """

    attention_bias_idxs: torch.Tensor  # (window², window²) int64, registered as a buffer

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window * window))
        self.register_buffer("attention_bias_idxs", relative_offset_index(window), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        qkv = self.qkv(self.norm(x)).reshape(batch, tokens, self.num_heads, 3 * self.head_dim)
        q, k, v = qkv.split(self.head_dim, dim=3)
        q, k, v = (t.permute(0, 2, 1, 3) for t in (q, k, v))
        bias = self.attention_biases[:, self.attention_bias_idxs]
        scores = (q @ k.transpose(-2, -1)) * self.scale + bias
        out = scores.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, -1))


class FeedForward(nn.Module):
    """Pre-norm MLP: LayerNorm, Linear, GELU, Linear (names ``norm``, ``fc1``, ``fc2``)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """Windowed attention (zero-padded to whole windows), depthwise local conv, MLP.

    Works on tokens (B, H*W, C) of the grid ``input_resolution`` = (H, W).
    """

    def __init__(
        self,
        dim: int,
        input_resolution: tuple[int, int],
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        local_conv_size: int,
    ) -> None:
        super().__init__()
        self.input_resolution = input_resolution
        self.window_size = window_size
        self.attn = WindowAttention(dim, num_heads, window_size)
        self.mlp = FeedForward(dim, int(dim * mlp_ratio))
        self.local_conv = Conv2dBN(
            dim, dim, local_conv_size, padding=local_conv_size // 2, groups=dim
        )

    def _windowed_attention(self, x: torch.Tensor) -> torch.Tensor:
        height, width = self.input_resolution
        window = self.window_size
        batch, tokens, channels = x.shape
        if height == window and width == window:
            return self.attn(x)
        grid = x.reshape(batch, height, width, channels)
        pad_bottom = (window - height % window) % window
        pad_right = (window - width % window) % window
        if pad_bottom or pad_right:
            grid = F.pad(grid, (0, 0, 0, pad_right, 0, pad_bottom))
        rows, cols = (height + pad_bottom) // window, (width + pad_right) // window
        windows = (
            grid.reshape(batch, rows, window, cols, window, channels)
            .transpose(2, 3)
            .reshape(batch * rows * cols, window * window, channels)
        )
        attended = self.attn(windows)
        grid = (
            attended.reshape(batch, rows, cols, window, window, channels)
            .transpose(2, 3)
            .reshape(batch, rows * window, cols * window, channels)
        )
        return grid[:, :height, :width].reshape(batch, tokens, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = self.input_resolution
        batch, tokens, channels = x.shape
        x = x + self._windowed_attention(x)
        x = self.local_conv(x.transpose(1, 2).reshape(batch, channels, height, width))
        x = x.reshape(batch, channels, tokens).transpose(1, 2)
        return x + self.mlp(x)


class ConvStage(nn.Module):
    """Stage 0: MBConv blocks on (B, C, H, W), then an optional merge to tokens."""

    def __init__(
        self,
        dim: int,
        input_resolution: tuple[int, int],
        depth: int,
        expand_ratio: float,
        out_dim: int | None,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand_ratio) for _ in range(depth))
        self.downsample = None if out_dim is None else PatchMerging(input_resolution, dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class TransformerStage(nn.Module):
    """A stage of :class:`TinyViTBlock` on tokens (B, H*W, C), then an optional merge."""

    def __init__(
        self,
        dim: int,
        input_resolution: tuple[int, int],
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        local_conv_size: int,
        out_dim: int | None,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TinyViTBlock(dim, input_resolution, num_heads, window_size, mlp_ratio, local_conv_size)
            for _ in range(depth)
        )
        self.downsample = None if out_dim is None else PatchMerging(input_resolution, dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class TinyViT(nn.Module):
    """TinyViT backbone + SAM neck: (B, in_chans, img_size, img_size) -> (B, neck_dim, H', W').

    Defaults are LiteMedSAM's: 256 input, widths 64/128/160/320, depths 2/2/6/2, heads 2/4/5/10,
    windows 7/7/14/7, MBConv expansion 4, MLP ratio 4, local conv 3 -> (B, 256, 64, 64).
    Parameter names follow the LiteMedSAM checkpoint (``patch_embed``, ``layers.{i}``, ``neck``).
    BatchNorm layers need ``eval()`` for inference.
    """

    def __init__(
        self,
        img_size: int = 256,
        in_chans: int = 3,
        embed_dims: Sequence[int] = (64, 128, 160, 320),
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (2, 4, 5, 10),
        window_sizes: Sequence[int] = (7, 7, 14, 7),
        mlp_ratio: float = 4.0,
        mbconv_expand_ratio: float = 4.0,
        local_conv_size: int = 3,
        neck_dim: int = 256,
    ) -> None:
        super().__init__()
        stage_count = len(depths)
        if not (len(embed_dims) == len(num_heads) == len(window_sizes) == stage_count):
            raise ValueError(
                "embed_dims, depths, num_heads and window_sizes need one entry per stage"
            )
        self.patch_embed = Stem(in_chans, embed_dims[0])
        resolution = (img_size, img_size)
        self.layers = nn.ModuleList()
        for index in range(stage_count):
            out_dim = embed_dims[index + 1] if index + 1 < stage_count else None
            if index == 0:
                stage: nn.Module = ConvStage(
                    embed_dims[0], resolution, depths[0], mbconv_expand_ratio, out_dim
                )
            else:
                stage = TransformerStage(
                    embed_dims[index],
                    resolution,
                    depths[index],
                    num_heads[index],
                    window_sizes[index],
                    mlp_ratio,
                    local_conv_size,
                    out_dim,
                )
            merge = getattr(stage, "downsample", None)
            if isinstance(merge, PatchMerging):
                resolution = merge.output_resolution
            self.layers.append(stage)
        self.output_resolution = resolution
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], neck_dim, kernel_size=1, bias=False),
            LayerNorm2d(neck_dim),
            nn.Conv2d(neck_dim, neck_dim, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(neck_dim),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, 256, 256) images in [0, 1] -> (B, 256, 64, 64) embedding."""
        x = self.patch_embed(images)
        for stage in self.layers:
            x = stage(x)
        height, width = self.output_resolution
        x = x.reshape(x.shape[0], height, width, -1).permute(0, 3, 1, 2)
        return self.neck(x)
