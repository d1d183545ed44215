"""A disk cache of the teacher's distillation targets, one file per image view.

The teacher's forward pass costs about half a student training step on a CPU; the targets of a
view (a frame with one flip) never change, so they are computed once and stored in float16
(about 11 MB per view: the six 160-wide blocks are stored once although the ``fs2`` target
holds them twice). Files are written atomically, so an interrupted run leaves no half file.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import torch

from napari_swinlitemedsam.model.checkpoint import save_torch_atomically
from napari_swinlitemedsam.training.teacher import DistillationTargets, compute_targets

_NAMES = ("fs0", "fs1", "blocks2", "fs3", "embedding")


class TeacherCache:
    """Targets by view key, in ``folder`` (created on demand); ``folder=None`` keeps nothing.

    Args:
        teacher_encoder: the LiteMedSAM TinyViT encoder (eval mode).
        folder: where the ``.pt`` files go.
        device: where the teacher runs.
    """

    def __init__(
        self,
        teacher_encoder: torch.nn.Module,
        folder: str | os.PathLike | None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.teacher_encoder = teacher_encoder.eval()
        self.folder = None if folder is None else Path(folder)
        self.device = torch.device(device)
        self.hits = 0
        self.misses = 0

    def _path(self, key: str) -> Path:
        digest = hashlib.sha1(key.encode("utf-8")).hexdigest()[:20]
        return self.folder / f"{digest}.pt"

    def get(self, key: str, image: Callable[[], torch.Tensor]) -> DistillationTargets:
        """Targets (batch 1, float32) for the view ``key``; ``image()`` gives its (1, 3, 256, 256)
        input when they must be computed."""
        if self.folder is not None:
            path = self._path(key)
            if path.is_file():
                try:
                    stored = torch.load(path, map_location="cpu", weights_only=True)
                    self.hits += 1
                    return _unpack(stored)
                except Exception:  # noqa: BLE001 - a damaged cache file is recomputed, not fatal
                    path.unlink(missing_ok=True)
        self.misses += 1
        targets = compute_targets(self.teacher_encoder, image().to(self.device))
        targets = targets.to("cpu")
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            save_torch_atomically(_pack(targets, key), self._path(key), durable=False)
        return targets


def _pack(targets: DistillationTargets, key: str) -> dict:
    fs0, fs1, fs2, fs3 = targets.skips
    half = fs2.shape[1] // 2
    tensors = (fs0, fs1, fs2[:, :half], fs3, targets.embedding)
    packed = {name: t.to(torch.float16).contiguous() for name, t in zip(_NAMES, tensors)}
    packed["key"] = key
    return packed


def _unpack(stored: dict) -> DistillationTargets:
    fs0, fs1, blocks2, fs3, embedding = (stored[name].float() for name in _NAMES)
    return DistillationTargets((fs0, fs1, torch.cat([blocks2, blocks2], dim=1), fs3), embedding)
