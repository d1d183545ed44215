"""Checking a weight file against its registry entry before anything installs or loads it.

What can be checked without a published hash: the file is a plain state dict that
``torch.load(weights_only=True)`` reads, its keys and shapes are exactly those of the network
(plus, all or none, the entry's optional keys with their listed shapes: the official
Swin-LiteMedSAM file has 411 keys, the June 2024 one 403), and every floating-point value is
finite. The sha256 is checked where the registry pins one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from napari_swinlitemedsam.model.checkpoint import (
    CheckpointError,
    check_keys,
    identify_variant,
    read_state_dict,
    sha256_of,
)
from napari_swinlitemedsam.model.registry import ModelWeights, get_spec

# Swin-LiteMedSAM's shifted-window masks hold -inf where tokens must not attend to each other.
INFINITE_BY_DESIGN = ("upper_lower_mask", "left_right_mask")


@dataclass(frozen=True)
class WeightsReport:
    """What a valid file holds: its network, number of keys, size and sha256."""

    network: str
    keys: int
    size_bytes: int
    sha256: str


def validate_weights(path: Path, entry: ModelWeights) -> WeightsReport:
    """Check ``path`` as a file of ``entry``; raise :class:`CheckpointError` saying what is wrong.

    Builds the network once (about a second on a laptop CPU) to compare keys and shapes.
    """
    path = Path(path)
    size = path.stat().st_size
    if entry.size_bytes is not None and size != entry.size_bytes:
        raise CheckpointError(
            f"{path} has {size} bytes, the {entry.name} file has {entry.size_bytes}"
        )
    digest = sha256_of(path)
    if entry.sha256 is not None and digest != entry.sha256:
        raise CheckpointError(
            f"{path} has sha256 {digest}, the {entry.name} file has {entry.sha256}"
        )
    state_dict = read_state_dict(path)
    variant = identify_variant(state_dict)
    if variant != entry.network:
        raise CheckpointError(f"{path} holds {variant} weights, not {entry.network} weights")
    state_dict = _without_optional_keys(state_dict, entry, path)
    check_keys(get_spec(entry.network).build(), state_dict, path)
    bad = sorted(key for key, value in state_dict.items() if not _values_allowed(key, value))
    if bad:
        raise CheckpointError(
            f"{path} has NaN or infinite values in {len(bad)} tensors (e.g. {', '.join(bad[:3])})"
        )
    return WeightsReport(network=variant, keys=len(state_dict), size_bytes=size, sha256=digest)


def _values_allowed(key: str, value: torch.Tensor) -> bool:
    """No NaN anywhere; infinities only in the shifted-window attention masks, which are
    additive masks of 0 and -inf by design."""
    if not value.is_floating_point() or value.numel() == 0:
        return True
    # min and max propagate NaN and show any infinity; one pass, no mask tensor allocated
    # (10x faster than isfinite().all() on a checkpoint of 15 M values).
    extremes = torch.stack(torch.aminmax(value.detach())).float()
    if key.endswith(INFINITE_BY_DESIGN):
        return not bool(torch.isnan(extremes).any())
    return bool(torch.isfinite(extremes).all())


def _without_optional_keys(
    state_dict: dict[str, torch.Tensor], entry: ModelWeights, path: Path
) -> dict[str, torch.Tensor]:
    """The state dict without the entry's optional keys, which must be all there or none."""
    optional = entry.optional_keys or {}
    present = [key for key in optional if key in state_dict]
    if not present:
        return state_dict
    missing = [key for key in optional if key not in state_dict]
    if missing:
        raise CheckpointError(
            f"{path} has {len(present)} of the {len(optional)} keys of the official decoder's "
            f"unused prompt blocks; missing: {', '.join(missing[:3])}"
        )
    wrong = [key for key in optional if tuple(state_dict[key].shape) != optional[key]]
    if wrong:
        key = wrong[0]
        raise CheckpointError(
            f"{path} does not fit the model: {key} {tuple(state_dict[key].shape)} != "
            f"{optional[key]}"
        )
    return {key: value for key, value in state_dict.items() if key not in optional}
