"""The Swin-LiteMedSAM image encoder.

This is not timm's Swin Transformer. Facts of the published network (Gao, Lyu, Staring 2024):

* the stem is two 1x1 convolutions with BatchNorm (3 -> 32, GELU, 32 -> 64) and does not
  downsample;
* each of the four stages starts with a patch merging (space-to-depth by 2, 2, 1, 1, then a
  Linear) and continues with pairs of Swin blocks (regular window, then shifted window);
* the attention works at a fixed head size of 32, so the inner width (heads x 32) differs from
  the block width; one 15x15 relative-position table is shared by all heads; qkv has no bias;
* a block is ``x + attn(LN(x))``, then a depthwise 3x3 conv + BN (no residual), then
  ``x + MLP(LN(x))``;
* a SAM-style neck maps the last stage to the (B, 256, 64, 64) image embedding; the four stage
  outputs are returned as skip maps for the decoder.

Module and parameter names reproduce the official state-dict keys
(``stage1.blocks.0.1.attention_block.fn.fn.to_qkv.weight`` ...), so the official checkpoint loads
without renaming.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from napari_swinlitemedsam.model.common import Conv2dBN, LayerNorm2d


def shifted_window_masks(window_size: int, displacement: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Additive attention masks for the windows that wrap around after a cyclic shift.

    Returns ``(upper_lower, left_right)``, each (window_size**2, window_size**2) with 0 where a
    query may attend to a key and -inf where the two tokens came from opposite image borders.
    Tokens are numbered row-major inside a window. ``upper_lower`` separates the last
    ``displacement`` rows from the others; ``left_right`` does the same for columns.
    """
    positions = torch.arange(window_size * window_size)
    rows, cols = positions // window_size, positions % window_size
    border = window_size - displacement
    row_side = rows >= border
    col_side = cols >= border
    upper_lower = torch.zeros(window_size**2, window_size**2)
    upper_lower[row_side[:, None] != row_side[None, :]] = float("-inf")
    left_right = torch.zeros(window_size**2, window_size**2)
    left_right[col_side[:, None] != col_side[None, :]] = float("-inf")
    return upper_lower, left_right


def relative_position_index(window_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column offsets (key minus query, shifted to be >= 0) for every token pair.

    Returns two (window_size**2, window_size**2) int64 tensors indexing the
    (2*window_size-1, 2*window_size-1) relative-position table.
    """
    positions = torch.arange(window_size * window_size)
    rows, cols = positions // window_size, positions % window_size
    d_row = rows[None, :] - rows[:, None] + window_size - 1
    d_col = cols[None, :] - cols[:, None] + window_size - 1
    return d_row, d_col


class WindowAttention(nn.Module):
    """Multi-head self-attention inside non-overlapping windows of a (B, H, W, C) map.

    H and W must be multiples of ``window_size``. With ``shifted`` the map is rolled by
    ``-window_size // 2`` first and rolled back afterwards; the wrapped windows are masked.
    """

    # buffers: (ws², ws²) offsets into ``pos_embedding``; (ws², ws²) additive masks when shifted
    relative_rows: torch.Tensor
    relative_cols: torch.Tensor
    upper_lower_mask: torch.Tensor
    left_right_mask: torch.Tensor

    def __init__(
        self, dim: int, heads: int, head_dim: int, window_size: int, shifted: bool
    ) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.head_dim = head_dim
        self.window_size = window_size
        self.shifted = shifted
        self.displacement = window_size // 2
        if shifted:
            upper_lower, left_right = shifted_window_masks(window_size, self.displacement)
            self.register_buffer("upper_lower_mask", upper_lower)
            self.register_buffer("left_right_mask", left_right)
        self.to_qkv = nn.Linear(dim, inner * 3, bias=False)
        self.pos_embedding = nn.Parameter(torch.randn(2 * window_size - 1, 2 * window_size - 1))
        d_row, d_col = relative_position_index(window_size)
        self.register_buffer("relative_rows", d_row, persistent=False)
        self.register_buffer("relative_cols", d_col, persistent=False)
        self.to_out = nn.Linear(inner, dim)
        # Inference-only memo of window orders and attention masks per map size (and dtype).
        self._memo: dict[tuple, torch.Tensor] = {}
        self._memo_version: tuple = ()

    def attention_bias(self, windows_down: int, windows_across: int) -> torch.Tensor:
        """Additive bias (1, 1 or nW, ws*ws, ws*ws): relative position plus the shift masks."""
        bias = self.pos_embedding[self.relative_rows, self.relative_cols]
        if not self.shifted:
            return bias[None, None]
        count = windows_down * windows_across
        per_window = bias.expand(count, -1, -1).clone()
        window_index = torch.arange(count, device=bias.device)
        last_row = window_index >= count - windows_across
        last_col = window_index % windows_across == windows_across - 1
        per_window[last_row] += self.upper_lower_mask
        per_window[last_col] += self.left_right_mask
        return per_window[None]

    def window_order(self, height: int, width: int, device: torch.device) -> torch.Tensor:
        """Row-major token indices of the (shifted) map, listed window by window.

        ``x.view(B, H*W, C)[:, order]`` is the (B, windows*ws*ws, C) window partition of the map
        rolled by ``-displacement`` (windows row-major, tokens row-major inside each window);
        the cyclic shift and the partition cost one gather instead of a roll plus a permute.
        """
        ws = self.window_size
        grid = torch.arange(height * width, device=device).view(height, width)
        if self.shifted:
            grid = torch.roll(grid, shifts=(-self.displacement, -self.displacement), dims=(0, 1))
        grid = grid.view(height // ws, ws, width // ws, ws).permute(0, 2, 1, 3)
        return grid.reshape(-1)

    def window_layout(self, height: int, width: int, device: torch.device) -> torch.Tensor:
        """:meth:`window_order`, kept between calls when autograd is off (inference)."""
        if torch.is_grad_enabled():
            return self.window_order(height, width, device)
        key = ("order", height, width, device)
        if key not in self._memo:
            self._memo[key] = self.window_order(height, width, device)
        return self._memo[key]

    def attention_mask(
        self, height: int, width: int, dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        """:meth:`attention_bias` as (1 or nW, 1, ws*ws, ws*ws) in ``dtype`` for a H x W map.

        When autograd is off (inference) the mask is kept and reused until the bias tensors
        change (their storage or in-place version, e.g. after ``load_state_dict``), so it is
        not rebuilt for every image.
        """
        ws = self.window_size

        def build() -> torch.Tensor:
            bias = self.attention_bias(height // ws, width // ws).to(device=device, dtype=dtype)
            return bias.reshape(-1, 1, ws * ws, ws * ws)

        if torch.is_grad_enabled():
            return build()
        sources: list[torch.Tensor] = [self.pos_embedding]
        if self.shifted:
            sources += [self.upper_lower_mask, self.left_right_mask]
        version = tuple((t.data_ptr(), t._version) for t in sources)
        if version != self._memo_version:
            self._memo.clear()
            self._memo_version = version
        key = ("mask", height, width, dtype, device)
        if key not in self._memo:
            self._memo[key] = build()
        return self._memo[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H, W, C)."""
        batch, height, width, channels = x.shape
        ws = self.window_size
        down, across = height // ws, width // ws
        windows, tokens = down * across, ws * ws
        if self.shifted:
            order = self.window_layout(height, width, x.device)
            partitioned = x.reshape(batch, height * width, channels).index_select(1, order)
        else:
            partitioned = x.view(batch, down, ws, across, ws, channels).permute(0, 1, 3, 2, 4, 5)
        # Windows go into the batch axis, so attention runs as one 4-D (B*windows, heads, ws*ws,
        # d) call (the fused kernel); q, k, v stay strided views of the qkv output.
        qkv = self.to_qkv(partitioned.reshape(batch * windows, tokens, channels))
        qkv = qkv.view(batch * windows, tokens, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        query, key, value = qkv.unbind(0)
        bias = self.attention_mask(height, width, query.dtype, query.device)
        if bias.shape[0] > 1 and batch > 1:
            bias = bias.repeat(batch, 1, 1, 1)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=bias)
        # (B*windows, heads, ws*ws, d) -> (B*windows, ws*ws, heads*d), a view of the kernel output
        out = self.to_out(out.transpose(1, 2).reshape(batch * windows, tokens, -1))
        if self.shifted:
            restored = torch.empty_like(out.view(batch, height * width, channels))
            restored.index_copy_(1, order, out.view(batch, height * width, channels))
            return restored.view(batch, height, width, channels)
        out = out.view(batch, down, across, ws, ws, channels).permute(0, 1, 3, 2, 4, 5)
        return out.reshape(batch, height, width, channels)


class PreNorm(nn.Module):
    """``fn(LayerNorm(x))`` on channels-last input; names ``norm`` and ``fn``."""

    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.norm(x))


class Residual(nn.Module):
    """``x + fn(x)``; name ``fn``."""

    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fn(x)


class FeedForward(nn.Module):
    """Linear -> GELU -> Linear, names ``net.0`` and ``net.2``."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SwinBlock(nn.Module):
    """Window attention, depthwise 3x3 conv + BN (no residual), MLP; on (B, H, W, C)."""

    def __init__(
        self, dim: int, heads: int, head_dim: int, window_size: int, shifted: bool
    ) -> None:
        super().__init__()
        attention = WindowAttention(dim, heads, head_dim, window_size, shifted)
        self.attention_block = Residual(PreNorm(dim, attention))
        self.local_conv = Conv2dBN(dim, dim, kernel_size=3, padding=1, groups=dim)
        self.mlp_block = Residual(PreNorm(dim, FeedForward(dim, dim * 4)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attention_block(x)
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.mlp_block(x)


class PatchMerging(nn.Module):
    """Space-to-depth by ``factor`` then Linear: (B, C, H, W) -> (B, H/f, W/f, out).

    The merged channel order is channel-major, then the row and column inside the f x f patch
    (the order of ``torch.nn.Unfold``), which the official weights expect. That Linear on
    f x f patches is a convolution with kernel f and stride f whose (out, C, f, f) weight is the
    Linear's weight viewed, so for f > 1 it runs as one on channels-last memory: no
    image-sized gather for the space-to-depth (on the 2-core AVX2 CPU the stage-1 gather alone
    was ~3 % of an encode), and the output is channels-last, so the (B, H/f, W/f, out) view
    the blocks take is contiguous.
    """

    def __init__(self, in_channels: int, out_channels: int, factor: int) -> None:
        super().__init__()
        self.factor = factor
        self.linear = nn.Linear(in_channels * factor * factor, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        f = self.factor
        if f == 1:
            return self.linear(x.permute(0, 2, 3, 1))
        weight = self.linear.weight.view(-1, channels, f, f)
        merged = F.conv2d(
            x.contiguous(memory_format=torch.channels_last), weight, self.linear.bias, stride=f
        )
        return merged.permute(0, 2, 3, 1)


class SwinStage(nn.Module):
    """Patch merging then ``depth`` Swin blocks in (regular, shifted) pairs; returns (B, C, H, W)."""

    def __init__(
        self,
        in_channels: int,
        dim: int,
        depth: int,
        factor: int,
        heads: int,
        head_dim: int,
        window_size: int,
    ) -> None:
        super().__init__()
        if depth % 2:
            raise ValueError(f"stage depth must be even (regular + shifted pairs), got {depth}")
        self.downsample = PatchMerging(in_channels, dim, factor)
        self.blocks = nn.ModuleList(
            nn.ModuleList(
                [
                    SwinBlock(dim, heads, head_dim, window_size, shifted=False),
                    SwinBlock(dim, heads, head_dim, window_size, shifted=True),
                ]
            )
            for _ in range(depth // 2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        for pair in self.blocks:
            regular, shifted = typing.cast(nn.ModuleList, pair)
            x = shifted(regular(x))
        return x.permute(0, 3, 1, 2)


class PatchEmbed(nn.Module):
    """1x1 Conv+BN (3 -> dim/2), GELU, 1x1 Conv+BN (dim/2 -> dim); no downsampling."""

    def __init__(self, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            Conv2dBN(in_chans, embed_dim // 2), nn.GELU(), Conv2dBN(embed_dim // 2, embed_dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class SwinImageEncoder(nn.Module):
    """Swin-LiteMedSAM encoder: (B, 3, 256, 256) in [0, 1] -> embedding and four skip maps.

    Returns ``(embedding, skips)`` with embedding (B, 256, 64, 64) and skips
    ``[fs0 (B, 128, 128, 128), fs1 (B, 160, 64, 64), fs2 (B, 320, 64, 64), fs3 (B, 320, 64, 64)]``
    for the default sizes.
    """

    def __init__(
        self,
        embed_dims: Sequence[int] = (64, 128, 160, 320),
        depths: Sequence[int] = (2, 2, 6, 2),
        heads: Sequence[int] = (2, 4, 5, 10),
        downscaling: Sequence[int] = (2, 2, 1, 1),
        head_dim: int = 32,
        window_size: int = 8,
        in_chans: int = 3,
        out_chans: int = 256,
    ) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(in_chans, embed_dims[0])
        stage_in = list(embed_dims)
        stage_out = list(embed_dims[1:]) + [embed_dims[-1]]
        for index in range(4):
            stage = SwinStage(
                stage_in[index],
                stage_out[index],
                depths[index],
                downscaling[index],
                heads[index],
                head_dim,
                window_size,
            )
            self.add_module(f"stage{index + 1}", stage)
        self.neck = nn.Sequential(
            nn.Conv2d(stage_out[-1], out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )
        self.skip_channels = tuple(stage_out)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        # channels-last from the stem on: the stage-1 patch merging then reads it as is
        x = self.patch_embed(images.contiguous(memory_format=torch.channels_last))
        skips = []
        for name in ("stage1", "stage2", "stage3", "stage4"):
            stage = typing.cast(SwinStage, getattr(self, name))
            x = stage(x)
            skips.append(x)
        return self.neck(x), skips
