"""Fine-tuning a model on a user's own images and (corrected) label maps.

:func:`finetune` is a generator, so that a GUI worker can show progress and cancel::

    steps = finetune(model, images, labels, steps=100)
    for progress in steps:            # one FinetuneProgress per optimiser step
        show(progress.step, progress.total, progress.loss)
        if cancelled:
            steps.close()             # the original model is untouched
            break
    # after a full run, the fine-tuned copy is the generator's return value
    # (inference.generators.run_to_end drives it):
    tuned = run_to_end(finetune(model, images, labels, steps=100))

The model is copied first; the copy learns Dice + BCE + IoU-MSE (:mod:`.losses`) with train-time
prompts made from the labels (:mod:`.prompts`; box only for LiteMedSAM, box + 4 points +
scribble for Swin-LiteMedSAM) and random flips. By default only the prompt encoder and mask
decoder learn (the image encoder is frozen and each view is encoded once); ``train_encoder``
trains everything. :func:`save_finetuned` writes the weights into the user model folder with a
model card.
"""

from __future__ import annotations

import copy
import json
import re
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from napari_swinlitemedsam.inference.heap_reuse import keep_freed_buffers
from napari_swinlitemedsam.model.checkpoint import default_model_dir, save_checkpoint, sha256_of
from napari_swinlitemedsam.model.registry import (
    MODEL_SPECS,
    PROMPTS_BOX,
    PROMPTS_BOX_POINTS_SCRIBBLE,
)
from napari_swinlitemedsam.model.segmenter import PromptableSegmenter
from napari_swinlitemedsam.training.dataset import FrameSet, TrainingDataError, frames_from_arrays
from napari_swinlitemedsam.training.stages import StageRunner, StageSettings

FEATURE_CACHE_BYTES = 1 << 29
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class FinetuneError(ValueError):
    """Fine-tuning cannot start or its result cannot be saved as asked."""


@dataclass(frozen=True)
class FinetuneProgress:
    """After ``step`` of ``total`` optimiser steps: that step's loss and the time so far (s)."""

    step: int
    total: int
    loss: float
    seconds: float


def prompts_of(model: PromptableSegmenter) -> str:
    """The prompt scheme a segmenter is used with (Swin-LiteMedSAM: box + points + scribble)."""
    return PROMPTS_BOX_POINTS_SCRIBBLE if model.uses_skips else PROMPTS_BOX


def training_frames(
    images: Sequence[np.ndarray] | np.ndarray, labels: Sequence[np.ndarray] | np.ndarray
) -> FrameSet:
    """Frames from image/label pairs: (H, W), (H, W, 3) images or (D, H, W) stacks, each with an
    integer label map of its spatial shape (0 = background; each other value is one object)."""
    if isinstance(images, np.ndarray):
        images, labels = [images], [labels]
    if len(images) != len(labels):
        raise FinetuneError(
            f"{len(images)} images but {len(labels)} label maps; give one label map per image"
        )
    frames = []
    for index, (image, label_map) in enumerate(zip(images, labels)):
        label_map = np.asarray(label_map)
        if not np.issubdtype(label_map.dtype, np.integer):
            if np.issubdtype(label_map.dtype, np.bool_) or np.all(np.mod(label_map, 1) == 0):
                label_map = label_map.astype(np.int64)
            else:
                raise FinetuneError(
                    f"label map {index} is not an integer map (dtype {label_map.dtype})"
                )
        try:
            frames.extend(frames_from_arrays(np.asarray(image), label_map, f"image{index}"))
        except TrainingDataError as error:
            raise FinetuneError(str(error)) from None
    frame_set = FrameSet(frames)
    if len(frame_set) == 0:
        raise FinetuneError(
            "the labels hold no object large enough to learn from; label some objects first"
        )
    return frame_set


def finetune(
    model: PromptableSegmenter,
    images,
    labels,
    steps: int = 100,
    *,
    train_encoder: bool = False,
    lr: float | None = None,
    objects_per_image: int = 4,
    seed: int = 0,
    device: str | torch.device | None = None,
    prompts: str | None = None,
) -> Generator[FinetuneProgress, None, PromptableSegmenter]:
    """Fine-tune a copy of ``model`` on ``images`` and ``labels`` (see the module docstring).

    Args:
        model: the segmenter to start from (not modified).
        images, labels: one array or a sequence of them (see :func:`training_frames`).
        steps: optimiser steps (one image view, ``objects_per_image`` objects each).
        train_encoder: also train the image encoder (slower; more prone to overfitting).
        lr: peak learning rate (default 1e-4, or 2e-5 with the encoder).
        seed: seeds the views, objects and prompts.
        device: default: the model's device.
        prompts: prompt scheme (default: the model's, see :func:`prompts_of`).

    Yields :class:`FinetuneProgress` after every step; returns the fine-tuned copy (eval mode).
    """
    if steps < 1:
        raise FinetuneError("steps must be at least 1")
    frames = training_frames(images, labels)
    scheme = prompts or prompts_of(model)
    if scheme not in (PROMPTS_BOX, PROMPTS_BOX_POINTS_SCRIBBLE):
        raise FinetuneError(f"unknown prompt scheme {scheme!r}")
    device = torch.device(device) if device is not None else model.device
    if device.type == "cpu":
        keep_freed_buffers()  # each step frees and allocates the same buffers (heap_reuse)
    tuned = copy.deepcopy(model).to(device)
    settings = StageSettings(
        stage="joint" if train_encoder else "decoder",
        steps=steps,
        lr=lr if lr is not None else (2e-5 if train_encoder else 1e-4),
        warmup_steps=min(5, steps),
        objects_per_image=objects_per_image,
        seed=seed,
        checkpoint_every=steps + 1,
    )
    runner = StageRunner(
        tuned,
        settings,
        frames,
        folder=None,
        device=device,
        with_points_and_scribble=scheme == PROMPTS_BOX_POINTS_SCRIBBLE,
        feature_cache_bytes=FEATURE_CACHE_BYTES,
    )
    started = time.perf_counter()
    for step, losses in runner.iterate():
        yield FinetuneProgress(step, steps, float(losses["loss"]), time.perf_counter() - started)
    return tuned.eval()


def check_model_name(name: str) -> str:
    """A safe file stem for a user model, or FinetuneError saying what is allowed."""
    if not _NAME_PATTERN.match(name or ""):
        raise FinetuneError(
            f"model name {name!r} is not allowed: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    if name in MODEL_SPECS or name.lower().endswith(".pth"):
        raise FinetuneError(
            f"choose another name than {name!r} (it is a built-in model or ends in .pth)"
        )
    return name


def save_finetuned(
    model: PromptableSegmenter,
    name: str,
    card: dict,
    model_dir: Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``<name>.pth`` (float32 state dict, atomic) and its model card ``<name>.json`` and
    ``<name>.md`` into the user model folder; returns the ``.pth`` path.

    ``card`` holds what the caller knows (base model, data, settings, figures); the weights'
    sha256 and the date are added here.
    """
    folder = Path(model_dir) if model_dir is not None else default_model_dir()
    name = check_model_name(name)
    path = folder / f"{name}.pth"
    if path.exists() and not overwrite:
        raise FinetuneError(f"{path} already exists; choose another name or allow overwriting")
    folder.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, path)
    full_card = {
        "name": name,
        "file": path.name,
        "sha256": sha256_of(path),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **card,
    }
    (folder / f"{name}.json").write_text(json.dumps(full_card, indent=2, default=str))
    (folder / f"{name}.md").write_text(model_card_markdown(full_card))
    return path


def model_card_markdown(card: dict) -> str:
    """A short human-readable model card from the card dict."""
    lines = [
        f"# {card['name']}",
        "",
        f"Fine-tuned from **{card.get('base_model', 'unknown')}** with napari-swinlitemedsam.",
        "",
    ]
    for key, value in card.items():
        if key in ("name",):
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k}: {v}" for k, v in value.items())
        lines.append(f"- **{key}**: {value}")
    lines += [
        "",
        (
            "Load it by path, or pick it in the widget's model list (it lives in the user "
            "model folder)."
        ),
        "",
    ]
    return "\n".join(lines)
