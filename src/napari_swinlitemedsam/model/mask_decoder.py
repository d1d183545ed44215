"""SAM's mask decoder (as used by LiteMedSAM): prompt tokens + image embedding -> mask logits."""

from __future__ import annotations

import torch
from torch import nn

from napari_swinlitemedsam.model.common import MLP, LayerNorm2d


class MaskDecoder(nn.Module):
    """Predict low-resolution mask logits and IoU estimates from image and prompt embeddings.

    Args:
        transformer_dim: channels C of the image embedding and of every token.
        transformer: a module mapping (image (B, C, H, W), pe (B or 1, C, H, W), tokens (B, N, C))
            to (tokens (B, N, C), image tokens (B, H*W, C)), e.g. :class:`TwoWayTransformer`.
        num_multimask_outputs: masks predicted besides the single-mask output.
        iou_head_depth: Linear layers of the IoU head.
        iou_head_hidden_dim: hidden width of the IoU head.
    """

    def __init__(
        self,
        transformer_dim: int = 256,
        transformer: nn.Module | None = None,
        num_multimask_outputs: int = 3,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
    ) -> None:
        super().__init__()
        if transformer is None:
            raise ValueError("MaskDecoder needs a transformer module, e.g. TwoWayTransformer()")
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3)
            for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(
            transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth
        )

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode B prompts.

        Args:
            image_embeddings: (B, C, H, W), or (1, C, H, W) shared by all B prompts.
            image_pe: (1, C, H, W) positional encoding of the embedding grid.
            sparse_prompt_embeddings: (B, K, C) point/box tokens.
            dense_prompt_embeddings: (B, C, H, W) mask-prompt embedding.
            multimask_output: return the 3 multimask outputs instead of the single mask.

        Returns:
            low_res_logits (B, 1 or 3, 4*H, 4*W) and iou_pred (B, 1 or 3).
        """
        masks, iou_pred = self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings
        )
        chosen = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, chosen], iou_pred[:, chosen]

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All ``num_mask_tokens`` masks (B, T, 4*H, 4*W) and IoU estimates (B, T)."""
        batch = sparse_prompt_embeddings.shape[0]
        if image_embeddings.shape[0] not in (1, batch):
            raise ValueError(
                f"image_embeddings has batch {image_embeddings.shape[0]} but there are {batch} prompts; "
                "pass one embedding per prompt or a single embedding shared by all prompts"
            )
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat(
            [output_tokens.unsqueeze(0).expand(batch, -1, -1), sparse_prompt_embeddings], dim=1
        )
        # Broadcasting adds the shared embedding to each prompt's dense embedding without a copy first.
        image = image_embeddings + dense_prompt_embeddings
        _, channels, height, width = image.shape
        token_out, image_tokens = self.transformer(image, image_pe, tokens)
        iou_token_out = token_out[:, 0, :]
        mask_tokens_out = token_out[:, 1 : 1 + self.num_mask_tokens, :]

        image = image_tokens.transpose(1, 2).reshape(batch, channels, height, width)
        upscaled = self.output_upscaling(image)
        hyper_in = torch.stack(
            [
                mlp(mask_tokens_out[:, index, :])
                for index, mlp in enumerate(self.output_hypernetworks_mlps)
            ],
            dim=1,
        )
        _, up_channels, up_height, up_width = upscaled.shape
        masks = (hyper_in @ upscaled.reshape(batch, up_channels, up_height * up_width)).reshape(
            batch, -1, up_height, up_width
        )
        iou_pred = self.iou_prediction_head(iou_token_out)
        return masks, iou_pred
