"""What the LiteMedSAM teacher's image encoder computes on the way, and the distillation targets.

The teacher (TinyViT) and the student (Swin) do the same kind of work in a different order:

=====================  ==================================  ====================================
point in the network   teacher (TinyViT, ``layers[i]``)     student (Swin, ``stage{i+1}``)
=====================  ==================================  ====================================
``stem``               1x1 Conv+BN stem, 64 @ 256x256       the same stem (identical tensors)
``merged0``            2 MBConv @ 64, merge -> 128 @ 128²   (no counterpart: the student merges
                                                            the stem output directly)
``blocks1``            2 attention blocks @ 128             stage 1 output ``fs0`` 128 @ 128²
``merged1``            merge -> 160 @ 64²                   stage 2 output ``fs1`` 160 @ 64²
``blocks2``            6 attention blocks @ 160             stage 3 output ``fs2`` 320 @ 64²
                                                            (holds ``blocks2`` twice, see below)
``merged2``            merge -> 320 @ 64² (stride 1)        stage 4's patch merging
``blocks3``            2 attention blocks @ 320             stage 4 output ``fs3`` 320 @ 64²
``embedding``          neck -> 256 @ 64²                    the same neck -> embedding
=====================  ==================================  ====================================

The student is initialised so that each of its stage outputs approximates the teacher at the
point in the right-hand column (see :mod:`.transplant`); the distillation loss then pulls every
stage output, and the neck embedding, towards exactly those teacher activations
(:func:`distillation_targets`). The teacher's six 160-wide blocks live in the student's
320-wide stage 3 as two identical copies, so the ``fs2`` target is ``blocks2`` concatenated
with itself along the channels.

All maps are (B, C, H, W) float tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

#: Names of the teacher activations returned by :func:`teacher_taps`, in network order.
TAP_NAMES = ("stem", "merged0", "blocks1", "merged1", "blocks2", "merged2", "blocks3", "embedding")


def tokens_to_map(tokens: torch.Tensor, resolution: tuple[int, int]) -> torch.Tensor:
    """(B, H*W, C) row-major tokens -> (B, C, H, W)."""
    height, width = resolution
    return tokens.reshape(tokens.shape[0], height, width, -1).permute(0, 3, 1, 2).contiguous()


def teacher_taps(encoder: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Run the TinyViT encoder on (B, 3, 256, 256) images and keep every named activation.

    Returns a dict keyed by :data:`TAP_NAMES`, each (B, C, H, W). ``embedding`` equals
    ``encoder(images)``. Gradients flow if the caller enables them (normally it does not).
    """
    taps: dict[str, torch.Tensor] = {}
    x = encoder.patch_embed(images)
    taps["stem"] = x
    conv_stage = encoder.layers[0]
    for block in conv_stage.blocks:
        x = block(x)
    x = conv_stage.downsample(x)
    resolution = conv_stage.downsample.output_resolution
    taps["merged0"] = tokens_to_map(x, resolution)
    for index, (blocks_name, merged_name) in enumerate(
        (("blocks1", "merged1"), ("blocks2", "merged2"), ("blocks3", None)), start=1
    ):
        stage = encoder.layers[index]
        for block in stage.blocks:
            x = block(x)
        taps[blocks_name] = tokens_to_map(x, resolution)
        if merged_name is not None:
            x = stage.downsample(x)
            resolution = stage.downsample.output_resolution
            taps[merged_name] = tokens_to_map(x, resolution)
    taps["embedding"] = encoder.neck(taps["blocks3"])
    return taps


@dataclass(frozen=True)
class DistillationTargets:
    """What the student encoder should output for a batch of images.

    Attributes:
        skips: ``[fs0 (B,128,128,128), fs1 (B,160,64,64), fs2 (B,320,64,64), fs3 (B,320,64,64)]``.
        embedding: (B, 256, 64, 64), the teacher's image embedding.
    """

    skips: tuple[torch.Tensor, ...]
    embedding: torch.Tensor

    def all(self) -> tuple[torch.Tensor, ...]:
        """The five targets in order fs0, fs1, fs2, fs3, embedding."""
        return (*self.skips, self.embedding)

    def to(
        self, device: torch.device | str, dtype: torch.dtype = torch.float32
    ) -> DistillationTargets:
        return DistillationTargets(
            tuple(t.to(device=device, dtype=dtype) for t in self.skips),
            self.embedding.to(device=device, dtype=dtype),
        )


def distillation_targets(taps: dict[str, torch.Tensor]) -> DistillationTargets:
    """The student's targets from :func:`teacher_taps` (see the module docstring's table)."""
    blocks2 = taps["blocks2"]
    skips = (
        taps["blocks1"],
        taps["merged1"],
        torch.cat([blocks2, blocks2], dim=1),
        taps["blocks3"],
    )
    return DistillationTargets(skips, taps["embedding"])


@torch.no_grad()
def compute_targets(teacher_encoder: nn.Module, images: torch.Tensor) -> DistillationTargets:
    """Targets for (B, 3, 256, 256) images, computed without gradients."""
    return distillation_targets(teacher_taps(teacher_encoder, images))
