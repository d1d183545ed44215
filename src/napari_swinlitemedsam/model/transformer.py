"""SAM's two-way transformer: prompt tokens and image tokens attend to each other."""

from __future__ import annotations

import math

import torch
from torch import nn


class MLPBlock(nn.Module):
    """Linear -> activation -> Linear (parameter names ``lin1``, ``lin2``)."""

    def __init__(
        self, embedding_dim: int, mlp_dim: int, activation: type[nn.Module] = nn.ReLU
    ) -> None:
        super().__init__()
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)
        self.act = activation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))


class Attention(nn.Module):
    """Multi-head attention whose projections may shrink the width by ``downsample_rate``.

    Inputs are (B, N, embedding_dim) for queries and (B, M, embedding_dim) for keys and values;
    the output is (B, N, embedding_dim).
    """

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        inner_dim = embedding_dim // downsample_rate
        if inner_dim % num_heads != 0:
            raise ValueError(
                f"num_heads={num_heads} must divide embedding_dim // downsample_rate = {inner_dim}"
            )
        self.num_heads = num_heads
        self.q_proj = nn.Linear(embedding_dim, inner_dim)
        self.k_proj = nn.Linear(embedding_dim, inner_dim)
        self.v_proj = nn.Linear(embedding_dim, inner_dim)
        self.out_proj = nn.Linear(inner_dim, embedding_dim)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, heads, N, C // heads)."""
        batch, tokens, channels = x.shape
        return x.reshape(batch, tokens, self.num_heads, channels // self.num_heads).transpose(1, 2)

    def attend(
        self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor
    ) -> torch.Tensor:
        """Softmax attention of projected, head-split (B, heads, N|M, D) inputs (batch 1
        broadcasts), then the output projection -> (B, N, embedding_dim)."""
        head_dim = queries.shape[-1]
        scores = (queries @ keys.transpose(-2, -1)) / math.sqrt(head_dim)
        weights = torch.softmax(scores, dim=-1)
        out = weights @ values  # (B, heads, N, head_dim)
        batch, _, tokens, _ = out.shape
        out = out.transpose(1, 2).reshape(batch, tokens, -1)
        return self.out_proj(out)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.attend(
            self.split_heads(self.q_proj(q)),
            self.split_heads(self.k_proj(k)),
            self.split_heads(self.v_proj(v)),
        )


class TwoWayAttentionBlock(nn.Module):
    """Token self-attention, token->image attention, token MLP, image->token attention.

    Each step is residual and followed by a LayerNorm (``norm1`` .. ``norm4``). In the first block
    (``skip_first_layer_pe``) the self-attention gets no positional encoding and no residual.
    """

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int = 2048,
        attention_downsample_rate: int = 2,
        skip_first_layer_pe: bool = False,
    ) -> None:
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(
            embedding_dim, num_heads, attention_downsample_rate
        )
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLPBlock(embedding_dim, mlp_dim, nn.ReLU)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(
            embedding_dim, num_heads, attention_downsample_rate
        )
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        query_pe: torch.Tensor,
        key_pe: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """queries/query_pe (B, N, C), keys/key_pe (B, HW, C) -> updated (queries, keys)."""
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            with_pe = queries + query_pe
            queries = queries + self.self_attn(with_pe, with_pe, queries)
        queries = self.norm1(queries)

        keys_with_pe = keys + key_pe
        queries = queries + self.cross_attn_token_to_image(queries + query_pe, keys_with_pe, keys)
        queries = self.norm2(queries)

        queries = self.norm3(queries + self.mlp(queries))

        keys = keys + self.cross_attn_image_to_token(keys_with_pe, queries + query_pe, queries)
        keys = self.norm4(keys)
        return queries, keys


class TwoWayTransformer(nn.Module):
    """``depth`` two-way blocks plus a final token->image attention (SAM's mask-decoder transformer).

    Args:
        depth: number of :class:`TwoWayAttentionBlock` (parameter prefix ``layers.{i}``).
        embedding_dim: channels C of tokens and image embedding.
        num_heads: attention heads.
        mlp_dim: hidden width of the token MLP.
        attention_downsample_rate: width reduction inside the cross attentions.
    """

    def __init__(
        self,
        depth: int = 2,
        embedding_dim: int = 256,
        num_heads: int = 8,
        mlp_dim: int = 2048,
        attention_downsample_rate: int = 2,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(
                embedding_dim,
                num_heads,
                mlp_dim,
                attention_downsample_rate,
                skip_first_layer_pe=index == 0,
            )
            for index in range(depth)
        )
        self.final_attn_token_to_image = Attention(
            embedding_dim, num_heads, attention_downsample_rate
        )
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def forward(
        self,
        image_embedding: torch.Tensor,
        image_pe: torch.Tensor,
        point_embedding: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the transformer.

        Args:
            image_embedding: (B, C, H, W).
            image_pe: (B, C, H, W) positional encoding of the image tokens (batch 1 broadcasts).
            point_embedding: (B, N, C) prompt and output tokens; also used as their positional encoding.

        Returns:
            queries (B, N, C) and keys (B, H*W, C).
        """
        keys = image_embedding.flatten(2).permute(0, 2, 1)
        key_pe = image_pe.flatten(2).permute(0, 2, 1)
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(queries, keys, point_embedding, key_pe)
        attended = self.final_attn_token_to_image(queries + point_embedding, keys + key_pe, keys)
        queries = self.norm_final_attn(queries + attended)
        return queries, keys
