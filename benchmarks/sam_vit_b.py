"""A compact SAM ViT-B image encoder (random weights), the peer the benchmarks time for orientation.

SAM ViT-B is the image encoder of MedSAM and of micro-sam's default model: a 1024 x 1024 input
cut into 16 x 16 patches (a 64 x 64 token grid), 12 transformer blocks of width 768 with 12
heads, windowed attention on 14 x 14 windows (the grid is zero-padded to 70 x 70) except in
blocks 2, 5, 8 and 11, which attend globally; every attention adds decomposed relative
position terms (one table along rows, one along columns); a neck (1x1 conv to 256, channel
LayerNorm, 3x3 conv, channel LayerNorm) gives a (B, 256, 64, 64) embedding.

Only the shapes and the amount of computation matter here; the weights are random (seeded).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from napari_swinlitemedsam.model.common import LayerNorm2d


class RelPosAttention(nn.Module):
    """Multi-head attention over a (B, H, W, C) grid with decomposed relative positions."""

    def __init__(self, dim: int, heads: int, grid: int) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.rel_rows = nn.Parameter(torch.randn(2 * grid - 1, self.head_dim) * 0.02)
        self.rel_cols = nn.Parameter(torch.randn(2 * grid - 1, self.head_dim) * 0.02)
        offsets = torch.arange(grid)[:, None] - torch.arange(grid)[None, :] + grid - 1
        self.register_buffer("offsets", offsets, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, channels = x.shape
        tokens = height * width
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, heads, T, d)
        q_grid = query.reshape(batch, self.heads, height, width, self.head_dim)
        row_table = self.rel_rows[self.offsets].to(query.dtype)  # (H, H, d)
        col_table = self.rel_cols[self.offsets].to(query.dtype)  # (W, W, d)
        row_term = torch.einsum("bnhwd,hkd->bnhwk", q_grid, row_table)
        col_term = torch.einsum("bnhwd,wkd->bnhwk", q_grid, col_table)
        bias = (row_term[..., :, None] + col_term[..., None, :]).reshape(
            batch, self.heads, tokens, tokens
        )
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=bias)
        out = out.transpose(1, 2).reshape(batch, height, width, channels)
        return self.proj(out)


class ViTBlock(nn.Module):
    """Pre-norm block; ``window`` > 0 attends inside zero-padded windows, 0 attends globally."""

    def __init__(self, dim: int, heads: int, window: int, grid: int) -> None:
        super().__init__()
        self.window = window
        self.norm1 = nn.LayerNorm(dim)
        self.attn = RelPosAttention(dim, heads, window if window else grid)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        x = self._windowed(x) if self.window else self.attn(x)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))

    def _windowed(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, channels = x.shape
        w = self.window
        pad_h, pad_w = (w - height % w) % w, (w - width % w) % w
        padded = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        rows, cols = (height + pad_h) // w, (width + pad_w) // w
        windows = padded.reshape(batch, rows, w, cols, w, channels).transpose(2, 3)
        out = self.attn(windows.reshape(batch * rows * cols, w, w, channels))
        out = out.reshape(batch, rows, cols, w, w, channels).transpose(2, 3)
        return out.reshape(batch, rows * w, cols * w, channels)[:, :height, :width]


class SamViTB(nn.Module):
    """(B, 3, 1024, 1024) -> (B, 256, 64, 64)."""

    def __init__(
        self,
        image_size: int = 1024,
        patch: int = 16,
        dim: int = 768,
        depth: int = 12,
        heads: int = 12,
        window: int = 14,
        global_blocks: tuple[int, ...] = (2, 5, 8, 11),
        out_chans: int = 256,
    ) -> None:
        super().__init__()
        grid = image_size // patch
        self.patch_embed = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)
        self.pos_embed = nn.Parameter(torch.randn(1, grid, grid, dim) * 0.02)
        self.blocks = nn.ModuleList(
            ViTBlock(dim, heads, 0 if i in global_blocks else window, grid) for i in range(depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(dim, out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(images).permute(0, 2, 3, 1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2))


def build_sam_vit_b(seed: int = 0) -> SamViTB:
    """SAM ViT-B with seeded random weights, in eval mode (the global RNG is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SamViTB().eval()
