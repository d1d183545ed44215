"""SAM's mask decoder for boxes alone, with the image's share computed once per image.

For a box-only prompt on a plain SAM mask decoder (LiteMedSAM: no mask input, no skip maps),
everything the first two-way block computes from the image is the same for every box: the image
tokens (embedding plus the "no mask" embedding), the keys and values of its token-to-image
attention and the queries of its image-to-token attention. :class:`BoxDecoderContext` computes
them once per image; :class:`CachedBoxDecoder` decodes boxes from them, which skips three of the
decoder's eleven image-sized matrix products per box.

:class:`CachedBoxDecoder` also computes the rest with fewer memory passes than
:class:`~.mask_decoder.MaskDecoder` (same arithmetic, float rounding aside):

- the upscaler runs channels-last (:mod:`.channels_last_upscaling`): its transposed
  convolutions are matrix products per pixel, no image-sized tensor is transposed;
- only the single-mask output (mask token 0) and its IoU estimate are computed.

These modules are what the graph runtimes run for a box without clicks
(:mod:`napari_swinlitemedsam.inference.graph_decoder`); torch decodes with the model itself.
On the 2-core development CPU this form ran a box in ~45 ms on ONNX Runtime against ~63 ms for
the exported ``model.decode`` (``docs/performance.md``).
"""

from __future__ import annotations

import typing

import torch
import torch.nn.functional as F
from torch import nn

from napari_swinlitemedsam.model.channels_last_upscaling import mask_grid, pixel_product
from napari_swinlitemedsam.model.common import LayerNorm2d
from napari_swinlitemedsam.model.mask_decoder import MaskDecoder
from napari_swinlitemedsam.model.segmenter import PromptableSegmenter
from napari_swinlitemedsam.model.transformer import (
    TwoWayAttentionBlock,
    TwoWayTransformer,
)


def check_box_only_decoder(model: PromptableSegmenter) -> tuple[MaskDecoder, TwoWayTransformer]:
    """``model``'s plain mask decoder and its two-way transformer, or a ValueError saying why
    the model's decoder needs more than a box (skip maps, a mask input)."""
    decoder = model.mask_decoder
    if model.uses_skips or model.mask_input_always or not isinstance(decoder, MaskDecoder):
        raise ValueError("this model's decoder needs more than the boxes; decode in torch")
    transformer = decoder.transformer
    if not isinstance(transformer, TwoWayTransformer) or len(transformer.layers) == 0:
        raise ValueError("the box-only decoder needs SAM's two-way transformer (depth >= 1)")
    return decoder, transformer


def _blocks(transformer: TwoWayTransformer) -> list[TwoWayAttentionBlock]:
    return typing.cast(list[TwoWayAttentionBlock], list(transformer.layers))


def _upscaler(decoder: MaskDecoder) -> tuple[nn.ConvTranspose2d, LayerNorm2d, nn.ConvTranspose2d]:
    """The two transposed convolutions of ``output_upscaling`` and the LayerNorm between them."""
    first, norm, _, second, _ = decoder.output_upscaling
    return typing.cast(
        tuple[nn.ConvTranspose2d, LayerNorm2d, nn.ConvTranspose2d], (first, norm, second)
    )


class BoxDecoderContext(nn.Module):
    """The box-independent products of the decoder's first two-way block, once per image.

    ``forward(embedding (1, C, H, W))`` returns, with heads h and D = inner width // h:

    - ``image`` (1, H*W, C): the image tokens (embedding plus the "no mask" embedding);
    - ``keys`` and ``values`` (1, h, H*W, D): the first token-to-image attention's;
    - ``queries`` (1, h, H*W, D): the first image-to-token attention's.
    """

    def __init__(self, model: PromptableSegmenter) -> None:
        super().__init__()
        _, transformer = check_box_only_decoder(model)
        self.prompt_encoder = model.prompt_encoder
        self.first_block = _blocks(transformer)[0]

    def forward(self, embedding: torch.Tensor) -> tuple[torch.Tensor, ...]:
        no_mask = self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        image = (embedding + no_mask).flatten(2).transpose(1, 2)
        image_pe = self.prompt_encoder.get_dense_pe().flatten(2).transpose(1, 2)
        with_pe = image + image_pe
        to_image = self.first_block.cross_attn_token_to_image
        to_tokens = self.first_block.cross_attn_image_to_token
        return (
            image,
            to_image.split_heads(to_image.k_proj(with_pe)),
            to_image.split_heads(to_image.v_proj(image)),
            to_tokens.split_heads(to_tokens.q_proj(with_pe)),
        )


class CachedBoxDecoder(nn.Module):
    """Box-only single-mask decoding from a :class:`BoxDecoderContext`.

    ``forward(image, keys, values, queries, boxes (N, 4) xyxy in the 256 frame)`` returns
    ``(logits (N, 1, 4H, 4W), iou (N, 1))``, what ``model.decode(features, boxes)`` returns.
    """

    def __init__(self, model: PromptableSegmenter) -> None:
        super().__init__()
        self.decoder, self.transformer = check_box_only_decoder(model)
        self.prompt_encoder = model.prompt_encoder
        self._blocks = _blocks(self.transformer)  # a plain list: registered in the transformer
        # a plain int: the exporter needs the LayerNorm's width as a constant
        self._first_width = int(_upscaler(self.decoder)[0].out_channels)

    def forward(
        self,
        image: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        queries: torch.Tensor,
        boxes: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        sparse, _ = self.prompt_encoder(points=None, boxes=boxes, masks=None)
        count = sparse.shape[0]
        output_tokens = torch.cat([self.decoder.iou_token.weight, self.decoder.mask_tokens.weight])
        prompt = torch.cat([output_tokens.unsqueeze(0).expand(count, -1, -1), sparse], dim=1)
        image_pe = self.prompt_encoder.get_dense_pe().flatten(2).transpose(1, 2)

        first, *later = self._blocks
        tokens = self._token_steps(first, prompt, prompt, keys, values)
        to_tokens = first.cross_attn_image_to_token
        with_pe = tokens + prompt
        attended = to_tokens.attend(
            queries,
            to_tokens.split_heads(to_tokens.k_proj(with_pe)),
            to_tokens.split_heads(to_tokens.v_proj(tokens)),
        )
        image = first.norm4(image + attended)
        for block in later:
            tokens, image = block(tokens, image, prompt, image_pe)
        final = self.transformer.final_attn_token_to_image
        attended = final(tokens + prompt, image + image_pe, image)
        tokens = self.transformer.norm_final_attn(tokens + attended)

        mask_weights = self.decoder.output_hypernetworks_mlps[0](tokens[:, 1, :])  # (N, C // 8)
        logits = self._upscaled_mask(image, mask_weights)
        iou = self.decoder.iou_prediction_head(tokens[:, 0, :])[:, :1]
        return logits, iou

    def _token_steps(
        self,
        block: TwoWayAttentionBlock,
        tokens: torch.Tensor,
        prompt: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
    ) -> torch.Tensor:
        """The first block's token self-attention, token-to-image attention on the cached
        keys/values, and token MLP: (N, T, C) -> (N, T, C)."""
        if block.skip_first_layer_pe:
            tokens = block.self_attn(tokens, tokens, tokens)
        else:
            with_pe = tokens + prompt
            tokens = tokens + block.self_attn(with_pe, with_pe, tokens)
        tokens = block.norm1(tokens)
        to_image = block.cross_attn_token_to_image
        query = to_image.split_heads(to_image.q_proj(tokens + prompt))
        tokens = block.norm2(tokens + to_image.attend(query, keys, values))
        return block.norm3(tokens + block.mlp(tokens))

    def _upscaled_mask(self, image: torch.Tensor, mask_weights: torch.Tensor) -> torch.Tensor:
        """Image tokens (N, H*W, C) and mask weights (N, C // 8) -> logits (N, 1, 4H, 4W),
        channels-last (:mod:`.channels_last_upscaling`)."""
        first, norm, second = _upscaler(self.decoder)
        height, width = self.prompt_encoder.image_embedding_size
        up = pixel_product(image, first)
        up = F.gelu(F.layer_norm(up, (self._first_width,), norm.weight, norm.bias, norm.eps))
        up = F.gelu(pixel_product(up, second))
        return mask_grid(up @ mask_weights[:, :, None], height, width)
