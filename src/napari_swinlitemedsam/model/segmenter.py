"""The promptable segmenter: image encoder + prompt encoder + mask decoder.

The split mirrors SAM's predictor: :meth:`PromptableSegmenter.encode` is the expensive, once per
image (slice) step; :meth:`PromptableSegmenter.decode` is the cheap, once per prompt batch step.
State-dict prefixes are ``image_encoder.``, ``prompt_encoder.`` and ``mask_decoder.``, as in the
official checkpoints of both models.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass

import torch
from torch import nn

from napari_swinlitemedsam.model.mask_decoder import MaskDecoder
from napari_swinlitemedsam.model.prompt_encoder import PromptEncoder
from napari_swinlitemedsam.model.skip_mask_decoder import SkipContext, SkipMaskDecoder


@dataclass(frozen=True)
class ImageFeatures:
    """Everything the decoder needs from one encoded image.

    Attributes:
        embedding: (1, 256, 64, 64) image embedding.
        skip_context: prompt-independent decoder features (Swin-LiteMedSAM), else None.
    """

    embedding: torch.Tensor
    skip_context: SkipContext | None = None

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> ImageFeatures:
        """A copy on ``device`` (and ``dtype`` for floating tensors)."""

        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=device, dtype=dtype or t.dtype)

        context = None
        if self.skip_context is not None:
            context = SkipContext(move(self.skip_context.fine), move(self.skip_context.coarse))
        return ImageFeatures(move(self.embedding), context)

    def tensors(self) -> dict[str, torch.Tensor]:
        """Named tensors (for caching to disk); inverse of :meth:`from_tensors`."""
        named = {"embedding": self.embedding}
        if self.skip_context is not None:
            named["skip_fine"] = self.skip_context.fine
            named["skip_coarse"] = self.skip_context.coarse
        return named

    @classmethod
    def from_tensors(cls, named: dict[str, torch.Tensor]) -> ImageFeatures:
        context = None
        if "skip_fine" in named:
            context = SkipContext(named["skip_fine"], named["skip_coarse"])
        return cls(named["embedding"], context)


class PromptableSegmenter(nn.Module):
    """Image encoder, prompt encoder and mask decoder of a (Lite)MedSAM-style model.

    Args:
        image_encoder: (B, 3, 256, 256) in [0, 1] -> embedding (B, 256, 64, 64), or
            ``(embedding, skips)`` for encoders with skip connections.
        prompt_encoder: SAM prompt encoder (256-pixel input, 64x64 embedding).
        mask_decoder: SAM mask decoder, or :class:`SkipMaskDecoder`.
        mask_input_always: feed an all-zero mask when no mask prompt is given (Swin-LiteMedSAM
            was trained with a scribble always present, and the reference passes an empty
            scribble as zeros through the mask branch rather than using ``no_mask_embed``).
    """

    image_size = 256

    def __init__(
        self,
        image_encoder: nn.Module,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder | SkipMaskDecoder,
        mask_input_always: bool = False,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.mask_input_always = mask_input_always
        self.uses_skips = isinstance(mask_decoder, SkipMaskDecoder)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def encode(self, images: torch.Tensor) -> list[ImageFeatures]:
        """Encode (B, 3, 256, 256) images in [0, 1]; returns one :class:`ImageFeatures` each."""
        if images.ndim != 4 or images.shape[1:] != (3, self.image_size, self.image_size):
            raise ValueError(
                f"expected images of shape (B, 3, {self.image_size}, {self.image_size}), "
                f"got {tuple(images.shape)}; use inference.transforms.prepare_image first"
            )
        encoded = self.image_encoder(images)
        if not self.uses_skips:
            embedding = encoded[0] if isinstance(encoded, tuple) else encoded
            return [ImageFeatures(embedding[i : i + 1]) for i in range(images.shape[0])]
        embedding, skips = encoded
        features = []
        for i in range(images.shape[0]):
            context = typing.cast(SkipMaskDecoder, self.mask_decoder).skip_context(
                [s[i : i + 1] for s in skips]
            )
            features.append(ImageFeatures(embedding[i : i + 1], context))
        return features

    def decode(
        self,
        features: ImageFeatures,
        boxes: torch.Tensor | None,
        points: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
        multimask_output: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode N prompt sets on one encoded image.

        Args:
            features: from :meth:`encode` (batch 1).
            boxes: (N, 4) xyxy in the 256 frame, or None.
            points: (N, P, 2) xy in the 256 frame, or None.
            point_labels: (N, P) 1 = positive, 0 = negative, -1 = padding.
            masks: (N, 1, 256, 256) scribble / mask prompts (0/1), or None.

        Returns:
            ``(low_res_logits (N, 1, 256, 256), iou_pred (N, 1))`` (3 masks with multimask).
        """
        count = _prompt_count(boxes, points, masks)
        if masks is None and self.mask_input_always:
            size = self.image_size
            masks = torch.zeros(
                count,
                1,
                size,
                size,
                device=features.embedding.device,
                dtype=features.embedding.dtype,
            )
        point_prompt = None if points is None else (points, point_labels)
        sparse, dense = self.prompt_encoder(points=point_prompt, boxes=boxes, masks=masks)
        image_pe = self.prompt_encoder.get_dense_pe()
        if self.uses_skips:
            return self.mask_decoder(
                features.embedding,
                image_pe,
                sparse,
                dense,
                features.skip_context,
                multimask_output=multimask_output,
            )
        return self.mask_decoder(
            features.embedding, image_pe, sparse, dense, multimask_output=multimask_output
        )


def _prompt_count(*prompts: torch.Tensor | None) -> int:
    for prompt in prompts:
        if prompt is not None:
            return prompt.shape[0]
    raise ValueError("decode needs at least one prompt: boxes, points or masks")
