"""The Swin-LiteMedSAM mask decoder: SAM's two-way transformer plus skip connections.

Compared with SAM's decoder, the upscaling path also sees the encoder's skip maps:

* ``neck`` turns ``cat(fs1, fs2, fs3)`` (800 channels at 64x64) into 256 channels. It does not
  depend on the prompts (about 6.5 of the decoder's 12.35 GFLOPs per box), so
  :meth:`SkipMaskDecoder.skip_context` computes it once per image and every box of that image
  reuses it;
* ``output_upscaling1`` works on ``cat(transformer output, neck)`` (512 channels, 64x64) and
  doubles the resolution to 128x128 with 128 channels;
* ``output_upscaling2`` works on ``cat(that, fs0)`` (256 channels, 128x128) and doubles it again
  to 256x256 with 32 channels, which the hypernetwork tokens turn into mask logits.

Each upscaling block starts with a 1x1 convolution of a concatenation, which splits into a term
of the prompt-dependent input and a term of the skip map. The skip maps' terms do not depend on
the prompts either: :meth:`SkipMaskDecoder.skip_context` computes them once per image too (0.8
GFLOPs a decode call saved, and the fine term has half the channels of fs0, so a cached slice
takes 12 instead of 16 MiB in float32).

The official class also declares two prompt-generation blocks (``prompt1``, ``prompt2``) that
its forward never calls; they are not built here (see ``checkpoint.py`` for how their keys are
dropped).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from napari_swinlitemedsam.model.common import MLP, LayerNorm2d


@dataclass(frozen=True)
class SkipContext:
    """Prompt-independent decoder inputs for one image: each skip map's term of the first 1x1
    convolution of its upscaling block, bias included (see :func:`_upscale_with_skip`).

    Attributes:
        fine: the term of fs0 (the first stage output) in ``output_upscaling2``,
            (1, 64, 128, 128).
        coarse: the term of the neck's output on cat(fs1, fs2, fs3) in ``output_upscaling1``,
            (1, 256, 64, 64).
    """

    fine: torch.Tensor
    coarse: torch.Tensor


class SkipMaskDecoder(nn.Module):
    """Predicts one mask per prompt set from an image embedding, its skip maps and prompts."""

    def __init__(
        self,
        transformer: nn.Module,
        transformer_dim: int = 256,
        skip_channels: int = 800,
        fine_channels: int = 128,
        num_multimask_outputs: int = 3,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
    ) -> None:
        super().__init__()
        dim = transformer_dim
        self.transformer = transformer
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        self.neck = nn.Sequential(
            nn.Conv2d(skip_channels, dim, kernel_size=1, bias=False),
            LayerNorm2d(dim),
            nn.Conv2d(dim, dim, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(dim),
        )
        self.output_upscaling1 = nn.Sequential(
            nn.Conv2d(dim * 2, dim, kernel_size=1),
            LayerNorm2d(dim),
            nn.GELU(),
            nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_upscaling2 = nn.Sequential(
            nn.Conv2d(dim // 2 + fine_channels, dim // 4, kernel_size=1),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(dim, dim, dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(
            dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth
        )

    def upscaling_blocks(self) -> tuple[nn.Sequential, nn.Sequential]:
        """The coarse (64 -> 128) and the fine (128 -> 256) upscaling block."""
        return self.output_upscaling1, self.output_upscaling2

    def skip_context(self, skips: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> SkipContext:
        """The prompt-independent part: skips [fs0, fs1, fs2, fs3] -> :class:`SkipContext`."""
        fine, *coarse = skips
        neck = self.neck(torch.cat(coarse, dim=1))
        return SkipContext(
            fine=_skip_term(self.output_upscaling2, fine),
            coarse=_skip_term(self.output_upscaling1, neck),
        )

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        context: SkipContext,
        multimask_output: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode B prompt sets on one image (or B images).

        Args:
            image_embeddings: (1 or B, 256, 64, 64).
            image_pe: (1, 256, 64, 64) dense positional encoding.
            sparse_prompt_embeddings: (B, K, 256) point and box tokens.
            dense_prompt_embeddings: (B, 256, 64, 64) scribble/mask embedding.
            context: from :meth:`skip_context` on the same image(s); batch 1 or B.
            multimask_output: return the three multimask outputs instead of mask 0.

        Returns:
            ``(low_res_logits (B, 1 or 3, 256, 256), iou_pred (B, 1 or 3))``.
        """
        batch = sparse_prompt_embeddings.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat(
            [output_tokens.unsqueeze(0).expand(batch, -1, -1), sparse_prompt_embeddings], dim=1
        )
        src = image_embeddings + dense_prompt_embeddings
        pos_src = image_pe.expand(batch, -1, -1, -1)
        _, channels, height, width = src.shape
        hs, src = self.transformer(src, pos_src, tokens)
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens, :]
        src = src.transpose(1, 2).reshape(batch, channels, height, width)

        upscaled = _upscale_with_skip(self.output_upscaling1, src, context.coarse)
        upscaled = _upscale_with_skip(self.output_upscaling2, upscaled, context.fine)

        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)],
            dim=1,
        )
        b, c, h, w = upscaled.shape
        masks = (hyper_in @ upscaled.view(b, c, h * w)).view(b, -1, h, w)
        iou_pred = self.iou_prediction_head(iou_token_out)
        selected = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, selected], iou_pred[:, selected]


def _skip_term(block: nn.Sequential, skip: torch.Tensor) -> torch.Tensor:
    """The share of ``skip`` (1 or B, Cs, H, W) in ``block``'s first 1x1 convolution of
    ``cat([x, skip], dim=1)``, with the convolution's bias: (1 or B, C_out, H, W)."""
    first = typing.cast(nn.Conv2d, block[0])
    split = first.in_channels - skip.shape[1]
    return F.conv2d(skip, first.weight[:, split:], first.bias)


def _upscale_with_skip(
    block: nn.Sequential, x: torch.Tensor, skip_term: torch.Tensor
) -> torch.Tensor:
    """``block(cat([x, skip], dim=1))`` without building the concatenation.

    The block starts with a 1x1 convolution, which splits into one part on ``x`` and one on
    ``skip``; the skip part (``skip_term``, from :func:`_skip_term`) is computed once per image
    (batch 1) and broadcast over the B prompt sets. ``x``: (B, Cx, H, W); ``skip_term``:
    (1 or B, C_out, H, W).
    """
    first, *rest = block
    first = typing.cast(nn.Conv2d, first)
    out = F.conv2d(x, first.weight[:, : x.shape[1]]) + skip_term
    for layer in rest:
        out = layer(out)
    return out
