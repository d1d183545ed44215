"""Swin-LiteMedSAM's skip decoder with its upscaler channels-last: what graph runtimes run.

:class:`ChannelsLastSkipDecoder` computes what ``model.decode`` computes for Swin-LiteMedSAM
(:class:`~.skip_mask_decoder.SkipMaskDecoder`, single-mask output) from plain tensors, so it
can be exported: the prompt encoder and the two-way transformer as they are, then both
upscaling blocks on rows of channels (:mod:`.channels_last_upscaling`). Each block's first 1x1
convolution of ``cat(x, skip)`` is a product of the rows of ``x`` plus the skip map's term,
computed once per image with the encoder (:class:`~.skip_mask_decoder.SkipContext`) and laid
out as rows once per image by :func:`skip_rows`. Only mask 0 and its IoU estimate are
computed. Same arithmetic as the model's decoder, float rounding aside.

In torch the upscaler's transposed convolutions cost two image-sized layout copies a box
(8 ms each on the 2-core development CPU); here no image-sized tensor is transposed.
"""

from __future__ import annotations

import typing

import torch
import torch.nn.functional as F
from torch import nn

from napari_swinlitemedsam.model.channels_last_upscaling import (
    mask_grid,
    pixel_product,
    upsampled_rows,
)
from napari_swinlitemedsam.model.common import LayerNorm2d
from napari_swinlitemedsam.model.segmenter import PromptableSegmenter
from napari_swinlitemedsam.model.skip_mask_decoder import SkipContext, SkipMaskDecoder


def check_skip_decoder(model: PromptableSegmenter) -> SkipMaskDecoder:
    """``model``'s skip decoder, or a ValueError if it has none."""
    decoder = model.mask_decoder
    if not model.uses_skips or not isinstance(decoder, SkipMaskDecoder):
        raise ValueError("this model has no skip decoder (Swin-LiteMedSAM's); decode in torch")
    return decoder


def skip_rows(context: SkipContext) -> tuple[torch.Tensor, torch.Tensor]:
    """The skip terms of one image as rows: ``coarse`` (1, C, H, W) -> (1, H*W, C) and
    ``fine`` (1, C', 2H, 2W) -> (1, 4*H*W, C') in the doubled map's row order."""
    coarse = context.coarse.flatten(2).transpose(1, 2).contiguous()
    return coarse, upsampled_rows(context.fine).contiguous()


def empty_skip_context(decoder: SkipMaskDecoder, grid: tuple[int, int]) -> SkipContext:
    """An all-zero :class:`SkipContext` of the shapes ``decoder`` makes for an (H, W) grid
    embedding (an example input for the exporter)."""
    coarse, fine = (_Block.of(block).mix.out_channels for block in decoder.upscaling_blocks())
    height, width = grid
    return SkipContext(
        fine=torch.zeros(1, fine, 2 * height, 2 * width),
        coarse=torch.zeros(1, coarse, height, width),
    )


class _Block(typing.NamedTuple):
    """One upscaling block: 1x1 convolution of ``cat(x, skip)``, LayerNorm2d, GELU,
    transposed convolution, GELU."""

    mix: nn.Conv2d
    norm: LayerNorm2d
    double: nn.ConvTranspose2d

    @classmethod
    def of(cls, block: nn.Sequential) -> _Block:
        mix, norm, _, double, _ = block
        return cls(
            typing.cast(nn.Conv2d, mix),
            typing.cast(LayerNorm2d, norm),
            typing.cast(nn.ConvTranspose2d, double),
        )


class ChannelsLastSkipDecoder(nn.Module):
    """Swin-LiteMedSAM's single-mask decode from plain tensors.

    ``forward(embedding (1, C, H, W), coarse (1, H*W, C), fine (1, 4*H*W, C'), boxes (N, 4),
    points (N, P, 2), labels (N, P), masks (N, 1, 4H, 4W))`` -> ``(logits (N, 1, 4H, 4W),
    iou (N, 1))``; ``coarse`` and ``fine`` from :func:`skip_rows`, prompts in the 256 frame as
    ``model.decode`` takes them.
    """

    def __init__(self, model: PromptableSegmenter) -> None:
        super().__init__()
        self.decoder = check_skip_decoder(model)
        self.prompt_encoder = model.prompt_encoder
        self._blocks = tuple(_Block.of(block) for block in self.decoder.upscaling_blocks())
        # plain ints: the exporter needs the LayerNorms' widths as constants
        self._widths = tuple(int(block.mix.out_channels) for block in self._blocks)

    def forward(
        self,
        embedding: torch.Tensor,
        coarse: torch.Tensor,
        fine: torch.Tensor,
        boxes: torch.Tensor,
        points: torch.Tensor,
        labels: torch.Tensor,
        masks: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        decoder = self.decoder
        sparse, dense = self.prompt_encoder(points=(points, labels), boxes=boxes, masks=masks)
        count = sparse.shape[0]
        output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight])
        tokens = torch.cat([output_tokens.unsqueeze(0).expand(count, -1, -1), sparse], dim=1)
        image_pe = self.prompt_encoder.get_dense_pe()
        # added as flat maps: OpenVINO's CPU plugin fuses an addition right after the mask
        # branch's last convolution into it, and that fused form fails on a broadcast batch
        # (N boxes, 1 embedding)
        image = (embedding.flatten(2) + dense.flatten(2)).reshape(dense.shape)
        queries, rows = decoder.transformer(image, image_pe, tokens)

        for block, skip, width in zip(self._blocks, (coarse, fine), self._widths, strict=True):
            own = block.mix.weight[:, : rows.shape[-1], 0, 0]  # the x part of cat(x, skip)
            mixed = rows @ own.t() + skip  # the skip term carries the bias
            mixed = F.gelu(
                F.layer_norm(mixed, (width,), block.norm.weight, block.norm.bias, block.norm.eps)
            )
            rows = F.gelu(pixel_product(mixed, block.double))

        mask_weights = decoder.output_hypernetworks_mlps[0](queries[:, 1, :])
        height, width = self.prompt_encoder.image_embedding_size
        logits = mask_grid(rows @ mask_weights[:, :, None], height, width)
        return logits, decoder.iou_prediction_head(queries[:, 0, :])[:, :1]
