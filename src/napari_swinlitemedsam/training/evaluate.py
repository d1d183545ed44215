"""Held-out evaluation: challenge DSC/NSD of a model, and how close a student's features are.

The held-out set is the ``heldout/`` folder written by :mod:`.data_builder`. It is scored in 2D,
frame by frame: stacks contribute every ``slice_step``-th labelled slice. In each frame, every
object of at least ``min_pixels`` pixels (at most ``max_objects``, a seeded choice) gets its
tight inclusive box, as in the challenge; the model segments all boxes; the case's DSC and NSD
(tolerance 2 px) come from :func:`..metrics.case_scores`. Figures are means over frames, per
source file and overall.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from napari_swinlitemedsam.evaluation.metrics import case_scores
from napari_swinlitemedsam.inference.pipeline import segment_image_2d
from napari_swinlitemedsam.inference.predictor import BoxPredictor
from napari_swinlitemedsam.model.registry import PROMPTS_BOX
from napari_swinlitemedsam.model.segmenter import PromptableSegmenter
from napari_swinlitemedsam.training.dataset import Frame, frame_to_256, load_frames, training_files
from napari_swinlitemedsam.training.losses import feature_l1
from napari_swinlitemedsam.training.teacher import compute_targets


@dataclass(frozen=True)
class EvalCase:
    """One held-out frame: (H, W, 3) uint8 image, (H, W) labels 1..K, K inclusive xyxy boxes."""

    name: str
    image: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray

    @property
    def source(self) -> str:
        return self.name.split("[")[0]


def eval_case(frame: Frame, max_objects: int = 16, min_pixels: int = 10) -> EvalCase | None:
    """The :class:`EvalCase` of a frame (objects relabelled 1..K), or None without objects."""
    ids, counts = np.unique(frame.labels, return_counts=True)
    ids = ids[(ids != 0) & (counts >= min_pixels)]
    if len(ids) == 0:
        return None
    if len(ids) > max_objects:
        rng = np.random.default_rng(zlib.crc32(frame.name.encode()))
        ids = np.sort(rng.choice(ids, size=max_objects, replace=False))
    labels = np.zeros(frame.labels.shape, dtype=np.uint16)
    boxes = []
    for k, label in enumerate(ids, start=1):
        mask = frame.labels == label
        labels[mask] = k
        rows, cols = np.nonzero(mask)
        boxes.append([cols.min(), rows.min(), cols.max(), rows.max()])
    return EvalCase(frame.name, frame.image, labels, np.array(boxes, dtype=np.int64))


def heldout_cases(folder, slice_step: int = 6, max_objects: int = 16) -> list[EvalCase]:
    """Evaluation cases of a held-out folder (every ``slice_step``-th labelled slice of stacks)."""
    frames = load_frames(training_files(folder))
    cases, seen = [], {}
    for frame in frames:
        source = frame.name.split("[")[0]
        position = seen.get(source, 0)
        seen[source] = position + 1
        if "[" in frame.name and position % slice_step:
            continue
        case = eval_case(frame, max_objects)
        if case is not None:
            cases.append(case)
    return cases


def summarise(rows: list[dict]) -> dict:
    """Mean DSC/NSD overall and per source from per-case rows."""

    def mean(values):
        values = [v for v in values if not np.isnan(v)]
        return float(np.mean(values)) if values else float("nan")

    sources = sorted({row["source"] for row in rows})
    return {
        "dsc": mean([r["dsc"] for r in rows]),
        "nsd": mean([r["nsd"] for r in rows]),
        "cases": len(rows),
        "per_source": {
            s: {
                "dsc": mean([r["dsc"] for r in rows if r["source"] == s]),
                "nsd": mean([r["nsd"] for r in rows if r["source"] == s]),
                "cases": sum(r["source"] == s for r in rows),
            }
            for s in sources
        },
        "per_case": rows,
    }


def evaluate_predictor(
    predictor: BoxPredictor,
    cases: list[EvalCase],
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Segment every case's boxes and score them; returns :func:`summarise` of the cases."""
    rows = []
    for index, case in enumerate(cases):
        segs = segment_image_2d(predictor, case.image, case.boxes)
        scores = case_scores(segs, case.labels)
        rows.append(
            {
                "case": case.name,
                "source": case.source,
                "dsc": scores["dsc"],
                "nsd": scores["nsd"],
                "objects": len(case.boxes),
            }
        )
        if progress is not None:
            progress(index + 1, len(cases))
    return summarise(rows)


def evaluate_model(
    model: PromptableSegmenter, prompts: str, cases: list[EvalCase], name: str = ""
) -> dict:
    """:func:`evaluate_predictor` with a fresh predictor around ``model`` (no embedding reuse)."""
    was_training = model.training
    predictor = BoxPredictor(model.eval(), prompts, model_name=name)
    try:
        return evaluate_predictor(predictor, cases)
    finally:
        model.train(was_training)


def teacher_decoder_on_student(
    student: PromptableSegmenter, teacher: PromptableSegmenter
) -> PromptableSegmenter:
    """The student's encoder with the teacher's prompt encoder and decoder (box prompts).

    Scoring it measures the student's embedding alone, independent of its own decoder.
    """
    return PromptableSegmenter(
        student.image_encoder, teacher.prompt_encoder, teacher.mask_decoder, mask_input_always=False
    )


@torch.no_grad()
def feature_closeness(
    student: PromptableSegmenter, teacher: PromptableSegmenter, cases: list[EvalCase]
) -> dict[str, float]:
    """Mean relative L1 (:func:`.losses.feature_l1`) of the student's fs0..fs3 and embedding
    against the teacher's targets over the cases' frames (1.0 = as far as all zeros)."""
    names = ("fs0", "fs1", "fs2", "fs3", "embedding")
    sums = dict.fromkeys(names, 0.0)
    student_encoder = student.image_encoder.eval()
    for case in cases:
        image_256, _ = frame_to_256(Frame(case.image, case.labels, case.name))
        image = torch.from_numpy(image_256)[None].to(student.device)
        embedding, skips = student_encoder(image)
        targets = compute_targets(teacher.image_encoder.eval(), image.to(teacher.device))
        for name, predicted, target in zip(names, (*skips, embedding), targets.all()):
            sums[name] += float(feature_l1(predicted.float().cpu(), target.float().cpu()))
    return {name: value / max(1, len(cases)) for name, value in sums.items()}


def evaluate_teacher(teacher: PromptableSegmenter, cases: list[EvalCase]) -> dict:
    """LiteMedSAM (box prompts) on the cases."""
    return evaluate_model(teacher, PROMPTS_BOX, cases, "litemedsam")
