"""The background jobs of the annotator, as types: what each one needs, nothing about threads.

The scheduler (:mod:`.scheduler`) decides which job runs next and returns one of these; the napari
glue runs it in a worker and hands the result back. Every job names its :class:`JobKind`, so code
that asks "what is running?" compares enum members, never strings.

Boxes are (N, 4) int ``[x_min, y_min, x_max, y_max]`` inclusive pixels; clicks (N, P, 2) ``xy``
with labels (N, P) 1 (add) / 0 (remove) / -1 (padding). ``slice_index`` is a :data:`SliceKey`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from napari_swinlitemedsam.annotation.annotator_state import SliceKey


class JobKind(enum.Enum):
    """Every kind of background work, with the words a status or error message uses for it."""

    LOAD_MODEL = "loading the model"
    PREPARE = "reading the image"
    ENCODE = "encoding the slice"
    DECODE = "decoding the boxes"
    PROPAGATE = "propagating through the stack"
    PREFETCH = "encoding ahead"
    BACKGROUND = "reading ahead"
    RUNTIME_CHECK = "measuring the runtimes"
    FINETUNE = "fine-tuning"
    DISCOVER_MODELS = "looking for models"
    DOWNLOAD = "downloading"

    @property
    def automatic(self) -> bool:
        """Work the annotator starts by itself (not on a box, click or button): after a failure
        it waits for the user instead of retrying at once."""
        return self in (
            JobKind.PREPARE,
            JobKind.ENCODE,
            JobKind.PREFETCH,
            JobKind.BACKGROUND,
            JobKind.RUNTIME_CHECK,
        )


@dataclass(frozen=True)
class LoadModelJob:
    """Load weights (a registry name or a ``.pth`` path) onto ``device``, the image encoder
    running in ``precision`` (``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"``)."""

    kind: ClassVar[JobKind] = JobKind.LOAD_MODEL
    name_or_path: str
    device: str
    label: str
    precision: str = "auto"


@dataclass(frozen=True)
class PrepareJob:
    """Map the image's intensities for the model once (a stack: to uint8 for all slices)."""

    kind: ClassVar[JobKind] = JobKind.PREPARE
    image_key: Hashable


@dataclass(frozen=True)
class EncodeJob:
    """Encode one slice into the predictor's cache (the slice on screen: with a status line)."""

    kind: ClassVar[JobKind] = JobKind.ENCODE
    image_key: Hashable
    slice_index: SliceKey


@dataclass(frozen=True)
class PrefetchJob:
    """Encode a slice the user is likely to visit next, quietly (lowest priority)."""

    kind: ClassVar[JobKind] = JobKind.PREFETCH
    image_key: Hashable
    slice_index: SliceKey


@dataclass(frozen=True)
class DecodeJob:
    """All boxes of one slice for one batched decoder call.

    ``ids``: object ids, one per box. ``boxes``: (N, 4) xyxy. ``points``: (N, P, 2) xy or None;
    ``point_labels``: (N, P) or None.
    """

    kind: ClassVar[JobKind] = JobKind.DECODE
    image_key: Hashable
    slice_index: SliceKey
    ids: list[int]
    boxes: np.ndarray
    points: np.ndarray | None = None
    point_labels: np.ndarray | None = None


@dataclass(frozen=True)
class PropagateJob:
    """Follow one object through the (D, H, W) stack from ``key_boxes`` ``{z: (4,) xyxy}``."""

    kind: ClassVar[JobKind] = JobKind.PROPAGATE
    image_key: Hashable
    object_id: int
    key_boxes: dict[int, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class BackgroundJob:
    """One short job offered by a background source (e.g. reading the next image of a series):
    ``work(*args)`` runs in the worker, ``on_return(result)`` on the GUI thread."""

    kind: ClassVar[JobKind] = JobKind.BACKGROUND
    work: Callable
    args: tuple = ()
    on_return: Callable | None = None


@dataclass(frozen=True)
class RuntimeCheckJob:
    """One step of the loaded model's runtime self-check (a candidate's trial, about one
    encode), run between the user's jobs until it has decided (see
    ``inference.deferred_self_check``)."""

    kind: ClassVar[JobKind] = JobKind.RUNTIME_CHECK


SliceJob = (
    LoadModelJob | PrepareJob | EncodeJob | PrefetchJob | DecodeJob | PropagateJob | RuntimeCheckJob
)
"""What the annotator's scheduler can ask for (plus :class:`BackgroundJob`)."""
