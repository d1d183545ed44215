"""The three training stages and a resumable loop that runs one of them.

* ``distill``: the image encoder alone learns the teacher's activations (L1 on every stage
  output ``fs0..fs3`` and on the neck embedding, see :mod:`.teacher`).
* ``decoder``: the encoder is frozen (no gradients, eval mode); the prompt encoder and mask
  decoder learn Dice + BCE + IoU-MSE from train-time prompts (:mod:`.prompts`).
* ``joint``: everything learns the segmentation loss, optionally plus ``distill_weight`` times
  the distillation loss (which keeps the encoder near the teacher).

The optimiser is AdamW; the learning rate warms up linearly for ``warmup_steps`` and then
follows a cosine down to 10 % at the last step. BatchNorm layers keep their running statistics
(they are in eval mode in every stage): with a batch of one or two images, batch statistics
would overwrite the transplanted ones with noise.

Each image slot of a step takes a random *view*: a frame (every source file equally likely, then
one of its frames) with a random flip (:mod:`.augment`). Every step's random numbers come
from ``numpy.random.default_rng([seed, stage, step])``, so a
resumed run draws exactly what an uninterrupted one would have.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from napari_swinlitemedsam.model.segmenter import ImageFeatures, PromptableSegmenter
from napari_swinlitemedsam.training.augment import PromptBatch, flip, prompt_batch, random_flip_code
from napari_swinlitemedsam.training.checkpointing import LossLog, load_state, save_state
from napari_swinlitemedsam.training.dataset import FrameSet
from napari_swinlitemedsam.training.feature_cache import FeatureCache
from napari_swinlitemedsam.training.losses import distillation_loss, segmentation_loss
from napari_swinlitemedsam.training.teacher_cache import TeacherCache

STAGES = ("distill", "decoder", "joint")
_STAGE_SEED = {"distill": 11, "decoder": 23, "joint": 37}


@dataclass(frozen=True)
class StageSettings:
    """Settings of one stage (saved with its checkpoints)."""

    stage: str
    steps: int
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_steps: int = 5
    images_per_step: int = 1
    objects_per_image: int = 4
    seed: int = 0
    bf16: bool = False
    checkpoint_every: int = 10
    distill_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"unknown stage {self.stage!r}; choose one of {', '.join(STAGES)}")
        if self.steps < 0 or self.images_per_step < 1 or self.objects_per_image < 1:
            raise ValueError("steps must be >= 0, images_per_step and objects_per_image >= 1")


def learning_rate(settings: StageSettings, step: int) -> float:
    """Linear warm-up to ``lr``, then a cosine down to ``0.1 * lr`` at ``steps``."""
    if step < settings.warmup_steps:
        return settings.lr * (step + 1) / settings.warmup_steps
    span = max(1, settings.steps - settings.warmup_steps)
    progress = min(1.0, (step - settings.warmup_steps) / span)
    return settings.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def configure_trainable(model: PromptableSegmenter, stage: str) -> list[nn.Parameter]:
    """Set ``requires_grad`` for ``stage`` and return the parameters that train."""
    encoder_trains = stage in ("distill", "joint")
    rest_trains = stage in ("decoder", "joint")
    for parameter in model.image_encoder.parameters():
        parameter.requires_grad_(encoder_trains)
    for module in (model.prompt_encoder, model.mask_decoder):
        for parameter in module.parameters():
            parameter.requires_grad_(rest_trains)
    return [p for p in model.parameters() if p.requires_grad]


def set_modes(model: PromptableSegmenter, stage: str) -> None:
    """Train mode, except BatchNorm everywhere and the whole encoder in the ``decoder`` stage."""
    model.train()
    if stage == "decoder":
        model.image_encoder.eval()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def encode_for_decoder(
    model: PromptableSegmenter, images: torch.Tensor, frozen: bool
) -> tuple[ImageFeatures, torch.Tensor | None, list | None]:
    """Encoder pass for one (1, 3, 256, 256) image: features, and the raw (embedding, skips)."""
    with torch.no_grad() if frozen else nullcontext():
        encoded = model.image_encoder(images)
    if model.uses_skips:
        embedding, skips = encoded
        return ImageFeatures(embedding, model.mask_decoder.skip_context(skips)), embedding, skips
    embedding = encoded[0] if isinstance(encoded, tuple) else encoded
    return ImageFeatures(embedding), embedding, None


def decode_batch(
    model: PromptableSegmenter, features: ImageFeatures, batch: PromptBatch
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoder logits (K, 1, 256, 256) and IoU (K, 1) for a :class:`PromptBatch`."""
    return model.decode(features, batch.boxes, batch.points, batch.point_labels, batch.scribbles)


@dataclass
class StageResult:
    """How far a stage got in this call."""

    stage: str
    steps_done: int
    finished: bool
    seconds: float
    last_losses: dict


class StageRunner:
    """Runs (or resumes) one stage; with a ``folder`` it keeps ``state.pt`` and ``log.csv`` there.

    Args:
        model: the segmenter to train (modified in place).
        settings: the stage's :class:`StageSettings`.
        frames: training frames.
        folder: the stage's folder (created), or None to keep no checkpoint and no log.
        teacher: targets for ``distill`` and for ``joint`` with ``distill_weight > 0``.
        device: where the model trains.
        with_points_and_scribble: train-time prompt scheme (False for box-only models).
        feature_cache_bytes: in the ``decoder`` stage (frozen encoder), keep up to this many
            bytes of encoder outputs per view in memory, so a view seen again is not re-encoded.
    """

    def __init__(
        self,
        model: PromptableSegmenter,
        settings: StageSettings,
        frames: FrameSet,
        folder: str | Path | None = None,
        teacher: TeacherCache | None = None,
        device: torch.device | str = "cpu",
        with_points_and_scribble: bool = True,
        feature_cache_bytes: int = 0,
    ) -> None:
        needs_teacher = settings.stage == "distill" or settings.distill_weight > 0
        if needs_teacher and teacher is None:
            raise ValueError(f"stage {settings.stage} needs the teacher's targets (a TeacherCache)")
        if len(frames) == 0:
            raise ValueError("no training frames")
        self.model = model.to(device)
        self.settings = settings
        self.frames = frames
        self.folder = None if folder is None else Path(folder)
        self.teacher = teacher
        self.device = torch.device(device)
        self.with_points_and_scribble = with_points_and_scribble
        self.parameters = configure_trainable(model, settings.stage)
        self.optimizer = torch.optim.AdamW(
            self.parameters,
            lr=settings.lr,
            betas=(0.9, 0.999),
            eps=1e-8,
            weight_decay=settings.weight_decay,
        )
        self.log = None if self.folder is None else LossLog(self.folder / "log.csv")
        self.step = 0
        self._weights = frames.balanced_weights()
        self._features = FeatureCache(feature_cache_bytes if settings.stage == "decoder" else 0)

    @property
    def state_path(self) -> Path | None:
        return None if self.folder is None else self.folder / "state.pt"

    def resume(self) -> bool:
        """Load ``state.pt`` if present; True when it was."""
        if self.state_path is None or not self.state_path.is_file():
            return False
        state = load_state(self.state_path)
        if state.stage != self.settings.stage:
            raise ValueError(
                f"{self.state_path} belongs to stage {state.stage}, not {self.settings.stage}"
            )
        self.model.load_state_dict(state.model)
        self.optimizer.load_state_dict(state.optimizer)
        self.step = state.step
        self.log.truncate_from(self.step)
        return True

    def save(self) -> None:
        if self.state_path is None:
            return
        save_state(
            self.state_path,
            self.model,
            self.optimizer,
            self.step,
            self.settings.stage,
            asdict(self.settings),
        )

    def _rng(self, step: int) -> np.random.Generator:
        return np.random.default_rng([self.settings.seed, _STAGE_SEED[self.settings.stage], step])

    def _pick_frame(self, rng: np.random.Generator) -> tuple[int, int]:
        """A frame (each source file equally likely, then a frame of it) and a random flip."""
        index = int(rng.choice(len(self.frames), p=self._weights))
        return index, random_flip_code(rng)

    def _view_tensor(self, index: int, code: int) -> torch.Tensor:
        image_256, _ = self.frames.prepared(index)
        return torch.from_numpy(flip(image_256, code))[None]

    def _targets(self, index: int, code: int):
        key = f"{self.frames.frames[index].name}|flip{code}"
        return self.teacher.get(key, lambda: self._view_tensor(index, code)).to(self.device)

    def _distill_loss(self, views: list[tuple[int, int]]) -> tuple[torch.Tensor, dict]:
        images = torch.cat([self._view_tensor(i, c) for i, c in views]).to(self.device)
        targets = [self._targets(i, c) for i, c in views]
        stacked = [torch.cat(parts) for parts in zip(*(t.all() for t in targets))]
        embedding, skips = self.model.image_encoder(images)
        loss, terms = distillation_loss(list(skips) + [embedding], stacked)
        names = ("fs0", "fs1", "fs2", "fs3", "embedding")
        return loss, {"loss": float(loss.detach()), **{f"l1_{n}": v for n, v in zip(names, terms)}}

    def _encode(self, image: torch.Tensor, key: tuple[int, int], frozen: bool):
        if not frozen:
            return encode_for_decoder(self.model, image, frozen=False)
        cached = self._features.get(key)
        if cached is None:
            with torch.no_grad():
                encoded = self.model.image_encoder(image)
            cached = encoded if isinstance(encoded, tuple) else (encoded, None)
            self._features.put(key, cached)
        embedding, skips = cached
        if self.model.uses_skips:
            return (
                ImageFeatures(embedding, self.model.mask_decoder.skip_context(skips)),
                embedding,
                skips,
            )
        return ImageFeatures(embedding), embedding, None

    def _segmentation_loss(self, rng: np.random.Generator) -> tuple[torch.Tensor, dict]:
        settings = self.settings
        frozen = settings.stage == "decoder"
        total = torch.zeros((), device=self.device)
        sums: dict[str, float] = {}
        for _ in range(settings.images_per_step):
            index, code = self._pick_frame(rng)
            image_256, labels_256 = self.frames.prepared(index)
            available = self.frames.objects(index)
            chosen = rng.choice(
                available, size=min(settings.objects_per_image, len(available)), replace=False
            )
            batch = prompt_batch(
                flip(image_256, code),
                flip(labels_256, code),
                chosen,
                rng,
                self.with_points_and_scribble,
            ).to(self.device)
            features, embedding, skips = self._encode(batch.image, (index, code), frozen)
            logits, iou = decode_batch(self.model, features, batch)
            parts = segmentation_loss(logits, iou, batch.targets)
            loss = parts.total
            values = parts.as_floats()
            if settings.distill_weight > 0 and skips is not None:
                distilled, _ = distillation_loss(
                    list(skips) + [embedding], self._targets(index, code).all()
                )
                loss = loss + settings.distill_weight * distilled
                values["distill"] = float(distilled.detach())
            total = total + loss / settings.images_per_step
            for key, value in values.items():
                sums[key] = sums.get(key, 0.0) + value / settings.images_per_step
        sums["loss"] = float(total.detach())
        return total, sums

    def iterate(self, max_seconds: float | None = None, stop_after: int | None = None):
        """Train, yielding ``(step, losses)`` after every step (``step`` = steps done so far).

        Stops at ``settings.steps``, after ``max_seconds``, or after ``stop_after`` steps in this
        call; checkpoints every ``checkpoint_every`` steps and when it stops. Closing the
        generator early stops without a final checkpoint.
        """
        settings = self.settings
        started = time.perf_counter()
        set_modes(self.model, settings.stage)
        autocast = (
            torch.autocast(self.device.type, dtype=torch.bfloat16)
            if settings.bf16
            else nullcontext()
        )
        done_here = 0
        while self.step < settings.steps:
            if max_seconds is not None and time.perf_counter() - started > max_seconds:
                break
            if stop_after is not None and done_here >= stop_after:
                break
            rate = learning_rate(settings, self.step)
            for group in self.optimizer.param_groups:
                group["lr"] = rate
            step_started = time.perf_counter()
            rng = self._rng(self.step)
            with autocast:
                if settings.stage == "distill":
                    views = [self._pick_frame(rng) for _ in range(settings.images_per_step)]
                    loss, losses = self._distill_loss(views)
                else:
                    loss, losses = self._segmentation_loss(rng)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            if self.log is not None:
                self.log.append(
                    {
                        "step": self.step,
                        "seconds": round(time.perf_counter() - step_started, 3),
                        "lr": rate,
                        **{k: round(v, 6) for k, v in losses.items()},
                    }
                )
            self.step += 1
            done_here += 1
            if self.step % settings.checkpoint_every == 0 or self.step == settings.steps:
                self.save()
            yield self.step, losses
        if self.step % settings.checkpoint_every:
            self.save()
        self.model.eval()

    def run(
        self,
        max_seconds: float | None = None,
        show_progress: bool = True,
        stop_after: int | None = None,
    ) -> StageResult:
        """:meth:`iterate` to the end with a progress bar; returns a :class:`StageResult`."""
        from tqdm import tqdm

        started = time.perf_counter()
        last: dict = {}
        with tqdm(
            total=self.settings.steps,
            initial=self.step,
            desc=self.settings.stage,
            unit="step",
            disable=not show_progress,
            dynamic_ncols=True,
        ) as bar:
            for _, last in self.iterate(max_seconds, stop_after):
                bar.update(1)
                bar.set_postfix(loss=f"{last['loss']:.4f}")
        return StageResult(
            self.settings.stage,
            self.step,
            self.step >= self.settings.steps,
            time.perf_counter() - started,
            last,
        )
