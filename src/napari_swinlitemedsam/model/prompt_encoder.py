"""SAM's prompt encoder: points, boxes and a low-resolution mask become decoder inputs.

Coordinates are ``x, y`` in the frame of the encoder input (256 × 256 for both models).
"""

from __future__ import annotations

import math
import typing

import torch
from torch import nn

from napari_swinlitemedsam.model.common import LayerNorm2d

NOT_A_POINT = -1
"""Point label of a padding token (contributes ``not_a_point_embed`` only)."""


class RandomFourierPositions(nn.Module):
    """Positional encoding with fixed random spatial frequencies (SAM's ``PositionEmbeddingRandom``).

    The frequency matrix is the buffer ``positional_encoding_gaussian_matrix`` of shape
    (2, num_frequencies); the encoding has ``2 * num_frequencies`` channels (sines, then cosines).
    """

    positional_encoding_gaussian_matrix: torch.Tensor  # (2, num_frequencies) buffer

    def __init__(self, num_frequencies: int = 128) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, num_frequencies))

    def encode_unit_coords(self, coords: torch.Tensor) -> torch.Tensor:
        """Encode (..., 2) ``x, y`` coordinates in [0, 1] as (..., 2 * num_frequencies)."""
        centred = 2 * coords - 1
        phases = centred @ self.positional_encoding_gaussian_matrix
        phases = (2 * math.pi) * phases
        return torch.cat([torch.sin(phases), torch.cos(phases)], dim=-1)

    def grid(self, height: int, width: int) -> torch.Tensor:
        """Encoding of every cell centre of a (height, width) grid, shaped (C, height, width)."""
        device = self.positional_encoding_gaussian_matrix.device
        ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height
        xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width
        coords = torch.stack(
            [xs[None, :].expand(height, width), ys[:, None].expand(height, width)], dim=-1
        )
        return self.encode_unit_coords(coords).permute(2, 0, 1)

    def encode_pixel_coords(
        self, coords: torch.Tensor, image_size: tuple[int, int]
    ) -> torch.Tensor:
        """Encode (B, N, 2) ``x, y`` pixel coordinates of an image of ``image_size`` = (H, W)."""
        height, width = image_size
        unit = torch.stack([coords[..., 0] / width, coords[..., 1] / height], dim=-1)
        return self.encode_unit_coords(unit.to(torch.float32))


class PromptEncoder(nn.Module):
    """Turn point, box and mask prompts into sparse tokens and a dense embedding.

    Args:
        embed_dim: channels of every token and of the dense embedding.
        image_embedding_size: (H, W) of the image embedding, e.g. (64, 64).
        input_image_size: (H, W) of the encoder input, e.g. (256, 256); prompt coordinates live here.
        mask_in_chans: hidden channels of the mask branch.
    """

    def __init__(
        self,
        embed_dim: int = 256,
        image_embedding_size: tuple[int, int] = (64, 64),
        input_image_size: tuple[int, int] = (256, 256),
        mask_in_chans: int = 16,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.image_embedding_size = tuple(image_embedding_size)
        self.input_image_size: tuple[int, int] = (
            int(input_image_size[0]),
            int(input_image_size[1]),
        )
        self.pe_layer = RandomFourierPositions(embed_dim // 2)
        # Index 0: negative point, 1: positive point, 2: box top-left, 3: box bottom-right.
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        quarter = mask_in_chans // 4
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, quarter, kernel_size=2, stride=2),
            LayerNorm2d(quarter),
            nn.GELU(),
            nn.Conv2d(quarter, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)
        self._dense_pe: torch.Tensor | None = None
        self._dense_pe_made_for: tuple | None = None

    def get_dense_pe(self) -> torch.Tensor:
        """Positional encoding of the image-embedding grid, shaped (1, embed_dim, H, W).

        The same for every box: computed once and reused (it was ~5 % of a one-box decode)
        until the frequency buffer changes (new weights, another device or dtype) or the
        grad mode changes; computed afresh while tracing, so that an exported graph holds it.
        """
        matrix = self.pe_layer.positional_encoding_gaussian_matrix
        made_for = (
            matrix.data_ptr(),
            matrix._version,  # bumped by in-place writes such as load_state_dict
            matrix.device,
            matrix.dtype,
            torch.is_inference_mode_enabled(),
            torch.is_grad_enabled(),
        )
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            return self.pe_layer.grid(*self.image_embedding_size).unsqueeze(0)
        if self._dense_pe is None or made_for != self._dense_pe_made_for:
            self._dense_pe = self.pe_layer.grid(*self.image_embedding_size).unsqueeze(0)
            self._dense_pe_made_for = made_for
        return self._dense_pe

    def _embed_points(self, coords: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        """(B, N, 2) xy + (B, N) labels -> (B, N [+1], embed_dim) tokens."""
        coords = coords + 0.5  # pixel centres
        if pad:
            batch = coords.shape[0]
            coords = torch.cat([coords, coords.new_zeros(batch, 1, 2)], dim=1)
            padding_labels = torch.full(
                (batch, 1), NOT_A_POINT, dtype=labels.dtype, device=labels.device
            )
            labels = torch.cat([labels, padding_labels], dim=1)
        tokens = self.pe_layer.encode_pixel_coords(coords, self.input_image_size)
        is_padding = (labels == NOT_A_POINT).unsqueeze(-1)
        tokens = torch.where(is_padding, self.not_a_point_embed.weight.to(tokens.dtype), tokens)
        for label, embedding in enumerate(self.point_embeddings):
            weight = typing.cast(nn.Embedding, embedding).weight
            tokens = tokens + (labels == label).unsqueeze(-1) * weight
        return tokens

    def _embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """(B, 4) or (B, 1, 4) xyxy boxes -> (B, 2, embed_dim) corner tokens."""
        corners = (boxes + 0.5).reshape(-1, 2, 2)
        tokens = self.pe_layer.encode_pixel_coords(corners, self.input_image_size)
        corners_embedded = typing.cast(list[nn.Embedding], list(self.point_embeddings)[2:4])
        corner_types = torch.cat([embedding.weight for embedding in corners_embedded])
        return tokens + corner_types

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode the prompts of a batch of B objects.

        Args:
            points: ``(coords, labels)``: coords (B, N, 2) float ``x, y`` in the input frame,
                labels (B, N) int: 1 positive, 0 negative, -1 padding (2/3: box corners), or None.
            boxes: (B, 4) ``x_min, y_min, x_max, y_max`` in the input frame, or None.
            masks: (B, 1, 4*He, 4*We) mask logits/maps (e.g. (B, 1, 256, 256)), or None.

        Returns:
            sparse: (B, K, embed_dim) point tokens first, then 2 box-corner tokens; when there is
                no box, one padding point is appended to the points.
            dense: (B, embed_dim, He, We): the mask branch output, or ``no_mask_embed`` broadcast.
        """
        batch = self._batch_size(points, boxes, masks)
        device = self.no_mask_embed.weight.device
        parts = [torch.empty(batch, 0, self.embed_dim, device=device)]
        if points is not None:
            coords, labels = points
            parts.append(self._embed_points(coords, labels, pad=boxes is None))
        if boxes is not None:
            parts.append(self._embed_boxes(boxes))
        sparse = torch.cat(parts, dim=1)
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            height, width = self.image_embedding_size
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch, -1, height, width)
        return sparse, dense

    @staticmethod
    def _batch_size(
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> int:
        if points is not None:
            return points[0].shape[0]
        if boxes is not None:
            return boxes.shape[0]
        if masks is not None:
            return masks.shape[0]
        return 1
