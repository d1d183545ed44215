"""Accuracy of the fast paths on the bundled real images: bf16 encoder and float16 cached features.

LiteMedSAM (real weights): mean DSC against the samples' reference labels with float32, with
``precision="bf16"`` and with ``feature_dtype=torch.float16``, and the change from float32 (the
issue asks for |change| <= 0.005). Swin-LiteMedSAM (synthetic weights, whose masks are not
meaningful segmentations): only the agreement with its own float32 masks.

2D: nuclei2d with every labelled nucleus as a box (one encode, all boxes decoded). 3D: brain_mr
and nuclei3d with every labelled object as a 3D box, through ``segment_volume``.
"""

from __future__ import annotations

import numpy as np
import torch

from bench_setup import make_predictor, tight_boxes_3d
from napari_swinlitemedsam.evaluation.metrics import dice
from napari_swinlitemedsam.inference.generators import run_to_end
from napari_swinlitemedsam.inference.intensity import to_uint8
from napari_swinlitemedsam.inference.volume import segment_volume
from napari_swinlitemedsam.io.samples import load_sample
from napari_swinlitemedsam.model.segmenter import PromptableSegmenter
from report import Row

SECTION = "accuracy of fast paths"
VARIANTS = {
    "bf16 encoder": {"precision": "bf16"},
    "fp16 cached features": {"feature_dtype": torch.float16},
}


def tight_boxes_2d(labels: np.ndarray) -> tuple[np.ndarray, list[int]]:
    ids = [int(i) for i in np.unique(labels) if i != 0]
    boxes = []
    for label in ids:
        ys, xs = np.nonzero(labels == label)
        boxes.append([xs.min(), ys.min(), xs.max(), ys.max()])
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4), ids


def _segment_2d(model, name, options, image, boxes) -> np.ndarray:
    predictor = make_predictor(model, name, **options)
    predictor.set_image(image)
    return predictor.predict(boxes).masks


def _segment_3d(model, name, options, volume, boxes) -> np.ndarray:
    predictor = make_predictor(model, name, **options)
    segs = run_to_end(segment_volume(predictor, volume, boxes))
    return np.stack([segs == k for k in range(1, len(boxes) + 1)])


def sample_cases(max_boxes_2d: int | None, samples_3d: tuple[str, ...]):
    """(name, segment function, image, boxes, (N, ...) reference masks) for each sample."""
    sample = load_sample("nuclei2d")
    boxes, ids = tight_boxes_2d(sample.labels)
    boxes, ids = boxes[:max_boxes_2d], ids[:max_boxes_2d]
    truth = np.stack([sample.labels == i for i in ids])
    cases = [("nuclei2d", _segment_2d, to_uint8(sample.image), boxes, truth)]
    for sample_name in samples_3d:
        sample = load_sample(sample_name)
        boxes3d, ids3d = tight_boxes_3d(sample.labels)
        truth = np.stack([sample.labels == i for i in ids3d])
        cases.append((sample_name, _segment_3d, to_uint8(sample.image), boxes3d, truth))
    return cases


def accuracy_section(
    models: dict[str, PromptableSegmenter],
    max_boxes_2d: int | None = None,
    samples_3d: tuple[str, ...] = ("brain_mr", "nuclei3d"),
    with_bf16: bool = True,
) -> tuple[list[Row], dict]:
    """``with_bf16``: include the bf16 encoder variant (left out by the quick mode where the
    CPU emulates bfloat16)."""
    rows, figures = [], {}
    variants = {k: v for k, v in VARIANTS.items() if with_bf16 or v.get("precision") != "bf16"}
    cases = sample_cases(max_boxes_2d, samples_3d)
    for name, model in models.items():
        real_weights = name == "litemedsam"
        for case_name, segment, image, boxes, truth in cases:
            base = segment(model, name, {}, image, boxes)
            base_dsc = float(np.mean([dice(m, t) for m, t in zip(base, truth)]))
            key = f"{name} {case_name}"
            figures[key] = {"fp32_dsc": base_dsc}
            if real_weights:
                rows.append(
                    Row(
                        SECTION,
                        f"{name}, {case_name}: fp32 mean DSC",
                        f"{base_dsc:.4f}",
                        f"{len(boxes)} objects vs the sample's reference labels",
                        {"dsc": base_dsc},
                    )
                )
            for variant, options in variants.items():
                masks = segment(model, name, options, image, boxes)
                agreement = float(np.mean([dice(a, b) for a, b in zip(masks, base)]))
                changed = int((masks != base).sum())
                numbers = {"agreement": agreement, "changed_pixels": changed}
                detail = f"DSC with fp32 masks {agreement:.4f}, {changed} pixels differ"
                value = f"agreement {agreement:.4f}"
                if real_weights:
                    dsc = float(np.mean([dice(m, t) for m, t in zip(masks, truth)]))
                    numbers.update(dsc=dsc, dsc_change=dsc - base_dsc)
                    value = f"DSC change **{dsc - base_dsc:+.4f}**"
                    detail = f"mean DSC {dsc:.4f}; " + detail
                figures[key][variant] = numbers
                rows.append(Row(SECTION, f"{name}, {case_name}: {variant}", value, detail, numbers))
    return rows, figures
