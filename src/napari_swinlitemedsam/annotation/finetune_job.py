"""The work behind "Fine-tune on my labels", without widgets: gathering training pairs from
layer data, and the fine-tune-then-save job that runs in a napari thread worker.

The job starts from a copy of the model's weights taken on the GUI thread (the annotator's
predictor keeps running meanwhile and is never touched by the job); it builds its own network
from them, fine-tunes it with :func:`~.inference.training.finetune.finetune` and saves it with
:func:`~.inference.training.finetune.save_finetuned`.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

SAVING = "saving"
"""Yielded by :func:`run_finetune_job` once training is done and the files are being written."""


class FinetuneFailed(Exception):
    """Fine-tuning stopped with an error (wraps errors of types a thread worker would swallow)."""


@dataclass(frozen=True)
class BaseModel:
    """A copy of the model a fine-tune starts from, taken on the GUI thread.

    ``state``: its state dict (tensors cloned); ``network``: its registry name; ``prompts``: its
    prompt scheme; ``name_or_path``/``label``: what it was loaded from and how the user knows it.
    """

    state: dict
    network: str
    prompts: str
    device: str
    name_or_path: str
    label: str


def copy_base_model(predictor, name_or_path: str, label: str) -> BaseModel:
    """Clone the weights of ``predictor``'s model (a BoxPredictor) for fine-tuning.

    The live model is only read (its forward never writes its tensors), so the copy is safe
    even while the annotator encodes with it in its own thread.
    """
    from napari_swinlitemedsam.model.registry import MODEL_SPECS

    model = predictor.model
    network = predictor.model_name
    if network not in MODEL_SPECS:
        network = "swin-litemedsam" if model.uses_skips else "litemedsam"
    state = {key: value.detach().clone() for key, value in model.state_dict().items()}
    return BaseModel(state, network, predictor.prompts, str(model.device), name_or_path, label)


@dataclass
class FinetuneJob:
    """Everything the worker needs, copied on the GUI thread before it starts.

    ``state``: the base model's state dict (tensors cloned from the live model), ``network``
    its registry name and ``prompts`` its prompt scheme. ``images``/``labels``: pairs of
    (H, W), (H, W, 3) or (D, H, W) images and integer label maps of their spatial shape.
    ``saved_path`` is set by the worker thread once the weights are on disk.
    """

    state: dict
    network: str
    prompts: str
    device: str
    images: list[np.ndarray]
    labels: list[np.ndarray]
    steps: int
    train_encoder: bool
    name: str
    card: dict
    model_dir: Path
    losses: list[float] = field(default_factory=list)
    saved_path: Path | None = None


def training_pair(
    image: np.ndarray, labels: np.ndarray, rgb: bool
) -> tuple[np.ndarray, np.ndarray] | None:
    """Copies of an image layer's data and its masks, ready for fine-tuning; None when the
    masks hold no object. ``image``: (H, W), (H, W, 3|4) when ``rgb``, or (D, H, W);
    ``labels``: its spatial shape. The alpha channel of an RGBA image is dropped.

    Masks not in memory (a zarr store of a stack bigger than memory) give only the slices that
    hold labels, read one at a time: ``(K, H, W)`` image and labels."""
    if not isinstance(labels, np.ndarray) and len(labels.shape) == 3 and not rgb:
        return labelled_slices(image, labels)
    labels = np.array(labels, copy=True)
    if not labels.any():
        return None
    image = np.array(image, copy=True)
    if rgb and image.shape[-1] == 4:
        image = image[..., :3]
    if image.shape[: labels.ndim] != labels.shape:
        raise ValueError(
            f"the masks have shape {labels.shape} but the image {image.shape}; "
            "choose a masks layer shaped like the image"
        )
    return image, labels


def labelled_slices(image, labels) -> tuple[np.ndarray, np.ndarray] | None:
    """``(K, H, W)`` image and labels of the K slices of a (D, H, W) stack whose labels are not
    all 0 (None when there is none); both are read one slice at a time."""
    if tuple(image.shape) != tuple(labels.shape):
        raise ValueError(
            f"the masks have shape {tuple(labels.shape)} but the image {tuple(image.shape)}; "
            "choose a masks layer shaped like the image"
        )
    images, masks = [], []
    for z in range(labels.shape[0]):
        plane = np.asarray(labels[z])
        if plane.any():
            images.append(np.asarray(image[z]))
            masks.append(plane)
    return (np.stack(images), np.stack(masks)) if masks else None


def count_objects(labels: list[np.ndarray]) -> int:
    """Objects over all label maps: the distinct non-zero ids of each map, summed."""
    return int(sum(np.count_nonzero(np.unique(label_map)) for label_map in labels))


def default_model_name(now: datetime, taken: set[str] = frozenset()) -> str:
    """``finetuned-YYYYmmdd-HHMM``, with ``-2``, ``-3``... added while the name is in ``taken``."""
    stem = now.strftime("finetuned-%Y%m%d-%H%M")
    name, number = stem, 1
    while name in taken:
        number += 1
        name = f"{stem}-{number}"
    return name


def time_left_text(seconds_so_far: float, step: int, total: int) -> str:
    """``"about 2 min 10 s left"`` from the mean time per step so far."""
    if step < 1:
        return ""
    left = math.ceil(seconds_so_far / step * (total - step))
    if left < 60:
        return f"about {left} s left"
    return f"about {left // 60} min {left % 60:02d} s left"


def run_finetune_job(job: FinetuneJob) -> Generator:
    """Fine-tune and save (runs in a worker thread).

    Yields :class:`~.inference.training.finetune.FinetuneProgress` after each step, then
    :data:`SAVING`; returns the saved ``.pth`` path. Closing the generator before
    :data:`SAVING` leaves nothing on disk. Raises ``FinetuneError`` for unusable labels or a
    name taken meanwhile, :class:`FinetuneFailed` for errors from the model code.
    """
    from napari_swinlitemedsam.inference.generators import relay
    from napari_swinlitemedsam.model.registry import get_spec
    from napari_swinlitemedsam.training.finetune import FinetuneError, finetune, save_finetuned

    try:
        model = get_spec(job.network).build().to(job.device)
        model.load_state_dict(job.state)
        model.eval()
        steps = finetune(
            model,
            job.images,
            job.labels,
            steps=job.steps,
            train_encoder=job.train_encoder,
            prompts=job.prompts,
        )

        def record(progress):
            job.losses.append(progress.loss)
            return progress

        tuned = yield from relay(steps, record)
        yield SAVING
        card = dict(job.card)
        card["final_loss"] = round(job.losses[-1], 4)
        card["loss_last_10_mean"] = round(float(np.mean(job.losses[-10:])), 4)
        job.saved_path = save_finetuned(tuned, job.name, card, model_dir=job.model_dir)
        return job.saved_path
    except FinetuneError:
        raise
    except (RuntimeError, ValueError, MemoryError) as error:
        # A thread worker treats a RuntimeError as "the worker was deleted" and reports nothing.
        raise FinetuneFailed(f"fine-tuning failed: {error}") from error
