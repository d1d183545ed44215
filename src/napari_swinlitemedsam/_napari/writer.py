"""napari writer: a Labels layer to a challenge prediction ``.npz`` (one array ``segs``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_swinlitemedsam.io.challenge_io import save_segs


def write_labels(path: str, data, attributes: dict) -> list[str]:
    """Write ``data`` (H, W) or (D, H, W) integer labels to ``path`` (``.npz`` added if missing),
    atomically; returns the written path."""
    target = Path(path)
    if target.suffix != ".npz":
        target = target.with_name(target.name + ".npz")
    return [str(save_segs(target, np.asarray(data)))]
