"""Section 3: a multi-object 3D case end to end, our pipeline against the reference-style one.

Ours: ``segment_volume`` with a fresh predictor (empty cache) per run: every slice is encoded
once for all objects, the skip neck is cached with the slice, all objects on a slice are decoded
in one call. Reference-style (``reference_style.reference_style_volume``): the same model, each
object on its own, every visited slice prepared and encoded again, one box per decoder call, the
skip neck recomputed for each box. The label volumes are compared object by object (differing
voxels, lowest DSC; see ``mask_agreement``): batched decoding may round a threshold voxel the
other way on some CPUs, and the box carried to the next slice follows it. The bf16 run is ours
with ``precision="bf16"``; its masks are compared with the float32 ones (and with the reference
labels of the sample where the weights are real).
"""

from __future__ import annotations

import numpy as np

from bench_setup import VolumeCase, make_predictor
from mask_agreement import describe, label_agreement
from napari_swinlitemedsam.evaluation.metrics import dice
from napari_swinlitemedsam.inference.generators import run_to_end
from napari_swinlitemedsam.inference.volume import REFERENCE_RULES, segment_volume
from napari_swinlitemedsam.model.segmenter import PromptableSegmenter
from reference_style import reference_style_volume
from report import Row
from timing import measure_interleaved

SECTION = "3 end to end, 3D"


def mean_object_dice(a: np.ndarray, b: np.ndarray, count: int) -> float:
    """Mean DSC over labels 1..count of two label volumes (NaN for a label absent from both)."""
    return float(np.mean([dice(a == k, b == k) for k in range(1, count + 1)]))


class VolumeRuns:
    """Runs one model on one case, keeping the last label volume of each way of running."""

    def __init__(self, model: PromptableSegmenter, name: str, case: VolumeCase) -> None:
        self.model, self.name, self.case = model, name, case
        self.outputs: dict[str, np.ndarray] = {}
        self.reference_encodes = 0

    def ours(self, precision: str = "fp32") -> None:
        """``segment_volume`` (the reference's schedule) with a fresh predictor (empty cache)."""
        predictor = make_predictor(self.model, self.name, precision=precision)
        volume = segment_volume(predictor, self.case.volume, self.case.boxes, rules=REFERENCE_RULES)
        self.outputs[f"ours {precision}"] = run_to_end(volume)

    def reference(self) -> None:
        labels, self.reference_encodes = reference_style_volume(
            self.model, self.model.mask_input_always, self.case.volume, self.case.boxes
        )
        self.outputs["reference"] = labels


def volume_section(
    models: dict[str, PromptableSegmenter], case: VolumeCase, repeats: int, with_bf16: bool = True
) -> tuple[list[Row], dict]:
    rows, figures = [], {}
    count = len(case.boxes)
    for name, model in models.items():
        runs = VolumeRuns(model, name, case)
        fns = {"ours fp32": runs.ours, "reference": runs.reference}
        if with_bf16:
            fns["ours bf16"] = lambda runs=runs: runs.ours("bf16")
        timings = measure_interleaved(fns, repeats, warmup=0)
        outputs = runs.outputs
        agreement = label_agreement(outputs["ours fp32"], outputs["reference"], count)
        fast, slow = timings["ours fp32"], timings["reference"]
        speedup = slow.median / fast.median
        figures[name] = {
            "ours_s": fast.median,
            "reference_s": slow.median,
            "speedup": speedup,
            "agreement": agreement,
            "encodes_ours": case.encodes_ours(),
            "encodes_reference": runs.reference_encodes,
        }
        rows += [
            Row(
                SECTION,
                f"{name}: reference-style",
                str(slow),
                f"{case.name}: {runs.reference_encodes} slice encodes, {count} objects one by one",
                {"seconds": slow.median},
            ),
            Row(
                SECTION,
                f"{name}: ours fp32",
                str(fast),
                f"{case.encodes_ours()} slice encodes; **{speedup:.2f}× faster**; labels vs "
                f"reference-style: **{describe(agreement)}**",
                {"seconds": fast.median, "speedup": speedup, **agreement},
            ),
        ]
        if with_bf16:
            bf16 = timings["ours bf16"]
            agreement = mean_object_dice(outputs["ours bf16"], outputs["ours fp32"], count)
            detail = (
                f"**{slow.median / bf16.median:.2f}× faster** than reference-style; "
                f"mean DSC(bf16, fp32) = {agreement:.4f}"
            )
            numbers = {
                "seconds": bf16.median,
                "speedup": slow.median / bf16.median,
                "agreement": agreement,
            }
            if case.labels is not None and name == "litemedsam":
                change = mean_object_dice(
                    outputs["ours bf16"], case.labels, count
                ) - mean_object_dice(outputs["ours fp32"], case.labels, count)
                detail += f"; DSC vs reference labels changes by {change:+.4f}"
                numbers["dsc_change"] = change
            rows.append(Row(SECTION, f"{name}: ours bf16", str(bf16), detail, numbers))
            figures[name]["bf16"] = numbers
    return rows, figures
