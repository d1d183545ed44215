"""The model registry: the only place where variant sizes live.

Each :class:`ModelSpec` names a network, how to build it with random weights, and which
prompts it was trained with. Weights are attached by ``checkpoint.load_model``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from napari_swinlitemedsam.model.prompt_encoder import PromptEncoder
from napari_swinlitemedsam.model.segmenter import PromptableSegmenter
from napari_swinlitemedsam.model.skip_mask_decoder import SkipMaskDecoder
from napari_swinlitemedsam.model.swin_encoder import SwinImageEncoder
from napari_swinlitemedsam.model.transformer import TwoWayTransformer

PROMPTS_BOX = "box"
PROMPTS_BOX_POINTS_SCRIBBLE = "box+points+scribble"


def _prompt_encoder() -> PromptEncoder:
    return PromptEncoder(
        embed_dim=256, image_embedding_size=(64, 64), input_image_size=(256, 256), mask_in_chans=16
    )


def _two_way_transformer() -> TwoWayTransformer:
    return TwoWayTransformer(depth=2, embedding_dim=256, num_heads=8, mlp_dim=2048)


def build_swin_litemedsam() -> PromptableSegmenter:
    """Swin-LiteMedSAM with random weights (Swin encoder, skip-connection decoder)."""
    encoder = SwinImageEncoder(
        embed_dims=(64, 128, 160, 320),
        depths=(2, 2, 6, 2),
        heads=(2, 4, 5, 10),
        downscaling=(2, 2, 1, 1),
        head_dim=32,
        window_size=8,
    )
    decoder = SkipMaskDecoder(
        _two_way_transformer(),
        transformer_dim=256,
        skip_channels=sum(encoder.skip_channels[1:]),
        fine_channels=encoder.skip_channels[0],
    )
    return PromptableSegmenter(encoder, _prompt_encoder(), decoder, mask_input_always=True)


def build_litemedsam() -> PromptableSegmenter:
    """LiteMedSAM (TinyViT encoder, plain SAM decoder) with random weights."""
    from napari_swinlitemedsam.model.mask_decoder import MaskDecoder
    from napari_swinlitemedsam.model.tiny_vit import TinyViT

    encoder = TinyViT(
        img_size=256,
        in_chans=3,
        embed_dims=(64, 128, 160, 320),
        depths=(2, 2, 6, 2),
        num_heads=(2, 4, 5, 10),
        window_sizes=(7, 7, 14, 7),
        mlp_ratio=4.0,
        mbconv_expand_ratio=4.0,
        local_conv_size=3,
    )
    decoder = MaskDecoder(
        transformer_dim=256,
        transformer=_two_way_transformer(),
        num_multimask_outputs=3,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )
    return PromptableSegmenter(encoder, _prompt_encoder(), decoder, mask_input_always=False)


@dataclass(frozen=True)
class ModelSpec:
    """A named network.

    Attributes:
        name: registry name, e.g. ``"swin-litemedsam"``.
        build: builds the network with random weights.
        prompts: the prompt scheme it was trained with (``PROMPTS_BOX`` or
            ``PROMPTS_BOX_POINTS_SCRIBBLE``).
        description: one line for users.
    """

    name: str
    build: Callable[[], PromptableSegmenter]
    prompts: str
    description: str


MODEL_SPECS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "swin-litemedsam",
            build_swin_litemedsam,
            PROMPTS_BOX_POINTS_SCRIBBLE,
            "Swin-LiteMedSAM (Gao, Lyu, Staring 2024): Swin encoder, box + 4 points + scribble",
        ),
        ModelSpec(
            "litemedsam",
            build_litemedsam,
            PROMPTS_BOX,
            "LiteMedSAM (CVPR 2024 challenge baseline): TinyViT encoder, box prompt",
        ),
    )
}


def get_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` called ``name``; KeyError names the known models."""
    try:
        return MODEL_SPECS[name]
    except KeyError:
        known = ", ".join(sorted(MODEL_SPECS))
        raise KeyError(f"unknown model {name!r}; known models: {known}") from None
