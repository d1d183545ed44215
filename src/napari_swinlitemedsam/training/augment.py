"""Augmentation and batch assembly in the 256 frame.

The published recipe augments with flips only: the padded (3, 256, 256) input and its label map
are flipped left-right and/or up-down, each with probability 1/2 (so the padding may end up at
the top or left). A *view* of a frame is the frame with one of the four flips; its code is
``0`` none, ``1`` left-right, ``2`` up-down, ``3`` both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from napari_swinlitemedsam.training.dataset import FrameSet
from napari_swinlitemedsam.training.prompts import training_prompts

FLIP_CODES = (0, 1, 2, 3)


def random_flip_code(rng: np.random.Generator) -> int:
    """One of :data:`FLIP_CODES`, each flip with probability 1/2."""
    return int(rng.integers(2)) + 2 * int(rng.integers(2))


def flip(array: np.ndarray, code: int) -> np.ndarray:
    """Flip the last two axes (rows, columns) of ``array`` by ``code`` (a contiguous copy)."""
    if code not in FLIP_CODES:
        raise ValueError(f"flip code must be one of {FLIP_CODES}, got {code}")
    if code & 1:
        array = array[..., :, ::-1]
    if code & 2:
        array = array[..., ::-1, :]
    return np.ascontiguousarray(array)


def view(frames: FrameSet, index: int, code: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame ``index`` flipped by ``code``: (3, 256, 256) image and (256, 256) labels."""
    image_256, labels_256 = frames.prepared(index)
    return flip(image_256, code), flip(labels_256, code)


@dataclass(frozen=True)
class PromptBatch:
    """K objects of one image with their prompts, as tensors for ``PromptableSegmenter.decode``.

    Attributes:
        image: (1, 3, 256, 256) float32.
        targets: (K, 1, 256, 256) float32 0/1 object masks.
        boxes: (K, 4) float32 xyxy.
        points: (K, 4, 2) float32 or None (box-only models).
        point_labels: (K, 4) int64 or None.
        scribbles: (K, 1, 256, 256) float32 or None.
    """

    image: torch.Tensor
    targets: torch.Tensor
    boxes: torch.Tensor
    points: torch.Tensor | None
    point_labels: torch.Tensor | None
    scribbles: torch.Tensor | None

    def to(self, device: torch.device | str) -> PromptBatch:
        def move(t):
            return None if t is None else t.to(device)

        return PromptBatch(
            *(
                move(getattr(self, name))
                for name in ("image", "targets", "boxes", "points", "point_labels", "scribbles")
            )
        )


def prompt_batch(
    image_256: np.ndarray,
    labels_256: np.ndarray,
    object_labels: np.ndarray,
    rng: np.random.Generator,
    with_points_and_scribble: bool,
) -> PromptBatch:
    """Masks and train-time prompts for the given object labels of one (flipped) view."""
    targets, boxes, points, scribbles = [], [], [], []
    for label in object_labels:
        mask = labels_256 == label
        prompts = training_prompts(mask, rng, with_points_and_scribble)
        targets.append(mask)
        boxes.append(prompts.box)
        points.append(prompts.points)
        scribbles.append(prompts.scribble)
    count = len(targets)
    tensor = torch.from_numpy
    if with_points_and_scribble:
        extra = (
            tensor(np.stack(points)),
            torch.ones(count, 4, dtype=torch.int64),
            tensor(np.stack(scribbles))[:, None],
        )
    else:
        extra = (None, None, None)
    return PromptBatch(
        tensor(np.ascontiguousarray(image_256))[None],
        tensor(np.stack(targets).astype(np.float32))[:, None],
        tensor(np.stack(boxes)),
        *extra,
    )


def sample_prompt_batch(
    frames: FrameSet,
    index: int,
    objects_per_image: int,
    rng: np.random.Generator,
    with_points_and_scribble: bool,
    augment: bool = True,
) -> PromptBatch:
    """A random flip of frame ``index`` and up to ``objects_per_image`` random objects of it."""
    code = random_flip_code(rng) if augment else 0
    image_256, labels_256 = view(frames, index, code)
    available = frames.objects(index)
    count = min(objects_per_image, len(available))
    chosen = rng.choice(available, size=count, replace=False)
    return prompt_batch(image_256, labels_256, chosen, rng, with_points_and_scribble)
