"""Which models the widget offers: the bundled LiteMedSAM always, the rest when their files exist."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

CHOOSE_FILE = "Choose file..."
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # "auto": measured once per model and machine
"""The encoder's precision choices (``BoxPredictor``'s ``precision``; spelled out here so that
building the widget's form does not import torch)."""


@dataclass(frozen=True)
class ModelChoice:
    """A model entry: the text shown and what ``BoxPredictor.from_pretrained`` is given.

    ``download``: the model's file is missing and choosing it offers to download it first.
    """

    label: str
    name_or_path: str
    download: bool = False


BUNDLED = ModelChoice("LiteMedSAM (bundled)", "litemedsam")
SWIN = ModelChoice("Swin-LiteMedSAM", "swin-litemedsam")
DISTILLED_LABEL = "Swin-LiteMedSAM distilled"


def download_choice(name: str) -> ModelChoice:
    """The entry of a registry model still to be downloaded: "Swin-LiteMedSAM (download, ~147 MB)"."""
    from napari_swinlitemedsam.model.registry import get_weights

    entry = get_weights(name)
    size = f", ~{entry.approx_mb} MB" if entry.approx_mb else ""
    return ModelChoice(f"{entry.label} (download{size})", entry.name, download=True)


def read_model_card(weights: Path) -> dict | None:
    """The model card ``<stem>.json`` beside fine-tuned weights, or None when there is none,
    it is unreadable, or it describes another file."""
    card_path = weights.with_suffix(".json")
    try:
        card = json.loads(card_path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(card, dict) or card.get("file") != weights.name or not card.get("name"):
        return None
    return card


def own_weights_choice(weights: Path) -> ModelChoice:
    """The entry for a ``.pth`` file in the model folder: a fine-tuned model under its card's
    name (and the model it came from), any other file under its file name. Loaded by path."""
    card = read_model_card(weights)
    if card is None:
        return ModelChoice(f"Own weights: {weights.name}", str(weights))
    base = Path(str(card.get("base_model") or "")).stem  # a model name, or a weight file's stem
    suffix = f" (from {base})" if base else ""
    return ModelChoice(f"Fine-tuned: {card['name']}{suffix}", str(weights))


def available_models(model_dir: Path | None = None) -> list[ModelChoice]:
    """LiteMedSAM (bundled); Swin-LiteMedSAM when its checkpoint is found, else its download
    entry (:func:`download_choice`); the distilled
    Swin-LiteMedSAM by its model name (so loading checks its sha256) when its file is there;
    then every other ``.pth`` of the model folder, in name order (fine-tuned models under the
    name in their model card).

    Looks at files only, never the network; imports torch (the checkpoint module does), so the
    widget calls it in a worker thread.
    """
    from napari_swinlitemedsam.model.checkpoint import (
        DISTILLED_FILENAME,
        DISTILLED_NAME,
        SWIN_LITEMEDSAM_FILENAME,
        CheckpointError,
        default_model_dir,
        resolve_weights,
    )

    folder = Path(model_dir) if model_dir is not None else default_model_dir()
    choices = [BUNDLED]
    try:
        resolve_weights(SWIN.name_or_path, model_dir=folder)
    except CheckpointError:
        choices.append(download_choice(SWIN.name_or_path))
    else:
        choices.append(SWIN)
    try:
        resolve_weights(DISTILLED_NAME, model_dir=folder)
    except CheckpointError:
        # A distilled file without its .sha256 is still offered by name: choosing it explains
        # what is missing instead of loading unchecked weights.
        if (folder / DISTILLED_FILENAME).is_file():
            choices.append(ModelChoice(DISTILLED_LABEL, DISTILLED_NAME))
    else:
        choices.append(ModelChoice(DISTILLED_LABEL, DISTILLED_NAME))
    if folder.is_dir():
        for path in sorted(folder.glob("*.pth")):
            if path.name in (SWIN_LITEMEDSAM_FILENAME, DISTILLED_FILENAME) or path.name.startswith(
                "."
            ):
                continue
            choices.append(own_weights_choice(path))
    return choices
