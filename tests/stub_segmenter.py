"""A stand-in for the promptable segmenter that is instant on a CPU and counts its encodes.

It has the interface :class:`BoxPredictor` uses (``encode``, ``decode``, ``eval``, ``device``,
``dtype``, parameters), and deterministic outputs that depend on the pixels and on the box:
the "embedding" is the image pooled to 64x64 and mixed by a fixed random 256-channel weight;
the logits are the embedding's channel mean, upsampled, inside the box, minus a threshold.
Its masks mean nothing; tests use it for caching and plumbing, where what counts is that the
same input gives the same output and that encodes can be counted.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from napari_swinlitemedsam.model.segmenter import ImageFeatures


class CountingSegmenter(nn.Module):
    """Deterministic fake encoder/decoder; ``encode_calls`` counts encoded images."""

    image_size = 256
    uses_skips = False

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.mix = nn.Parameter(torch.rand(256, 3, generator=generator) + 0.5, requires_grad=False)
        self.encode_calls = 0

    @property
    def device(self) -> torch.device:
        return self.mix.device

    @property
    def dtype(self) -> torch.dtype:
        return self.mix.dtype

    def encode(self, images: torch.Tensor) -> list[ImageFeatures]:
        """(B, 3, 256, 256) -> one (1, 256, 64, 64) embedding each."""
        self.encode_calls += images.shape[0]
        pooled = F.avg_pool2d(images, 4)  # (B, 3, 64, 64)
        embedding = torch.einsum("oc,bchw->bohw", self.mix, pooled) / 3.0
        return [ImageFeatures(embedding[i : i + 1]) for i in range(images.shape[0])]

    def decode(
        self, features, boxes, points=None, point_labels=None, masks=None, multimask_output=False
    ):
        """Logits (N, 1, 256, 256): bright parts of the embedding inside each box."""
        mean = features.embedding.float().mean(dim=1, keepdim=True)  # (1, 1, 64, 64)
        upsampled = F.interpolate(mean, size=(256, 256), mode="bilinear", align_corners=False)
        count = boxes.shape[0]
        ys = torch.arange(256, dtype=torch.float32).view(1, 256, 1)
        xs = torch.arange(256, dtype=torch.float32).view(1, 1, 256)
        b = boxes.float().view(count, 4, 1, 1)
        inside = (xs >= b[:, 0]) & (xs <= b[:, 2]) & (ys >= b[:, 1]) & (ys <= b[:, 3])
        centre = upsampled[0, 0][inside.any(0)].mean() if inside.any() else upsampled.mean()
        logits = torch.where(inside, (upsampled[0, 0] - centre) * 50.0, torch.tensor(-20.0))
        return logits[:, None], torch.ones(count, 1)


def stub_predictor(seed: int = 0, **options):
    """A :class:`BoxPredictor` around a :class:`CountingSegmenter` (box prompts)."""
    from napari_swinlitemedsam.inference.predictor import BoxPredictor
    from napari_swinlitemedsam.model.registry import PROMPTS_BOX

    return BoxPredictor(CountingSegmenter(seed), PROMPTS_BOX, model_name="stub", **options)
