"""Which models the widget offers: the bundled LiteMedSAM always, the rest when their files exist."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CHOOSE_FILE = "Choose file..."
DEVICES = ("auto", "cpu", "cuda", "mps")


@dataclass(frozen=True)
class ModelChoice:
    """A model entry: the text shown and what ``BoxPredictor.from_pretrained`` is given."""

    label: str
    name_or_path: str


BUNDLED = ModelChoice("LiteMedSAM (bundled)", "litemedsam")


def available_models(model_dir: Path | None = None) -> list[ModelChoice]:
    """LiteMedSAM (bundled); Swin-LiteMedSAM when its checkpoint is found; every other ``.pth``
    in the model folder (weights trained with this package), in name order.

    Looks at files only, never the network; imports torch (the checkpoint module does), so the
    widget calls it in a worker thread.
    """
    from .model.checkpoint import (
        SWIN_LITEMEDSAM_FILENAME,
        CheckpointError,
        default_model_dir,
        resolve_weights,
    )

    folder = model_dir if model_dir is not None else default_model_dir()
    choices = [BUNDLED]
    try:
        resolve_weights("swin-litemedsam", model_dir=folder)
    except CheckpointError:
        pass
    else:
        choices.append(ModelChoice("Swin-LiteMedSAM", "swin-litemedsam"))
    if folder.is_dir():
        for path in sorted(folder.glob("*.pth")):
            if path.name != SWIN_LITEMEDSAM_FILENAME:
                choices.append(ModelChoice(f"Own weights: {path.name}", str(path)))
    return choices
