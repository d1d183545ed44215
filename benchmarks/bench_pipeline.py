"""Section 3b: the pipelined 3D propagation against today's schedule and the reference style.

One multi-object 3D case (the bundled nuclei3d stack, the tight boxes of its first N nuclei),
the same model, every variant measured interleaved in the same run:

* **reference-style** (``reference_style.reference_style_volume``): each object on its own,
  every visited slice encoded again, one box per decoder call (torch fp32);
* **one encode per slice** (``segment_volume(lookahead=0)``, torch fp32): the schedule before
  pipelining: all objects share a slice's encode and decode in one call, encode and decode
  alternate in one thread;
* **pipelined** (``lookahead=1``): the next slice is encoded in a background thread while the
  current one decodes;
* **pipelined, chosen runtime**: the same with the runtime the self-check picks for this model
  on a CPU without native bf16 (ONNX Runtime for LiteMedSAM, see ``docs/performance.md``), one
  slice per encode, and two slices encoded side by side on half the threads each (what
  ``segment_volume`` does by default on a graph runtime, ``inference/parallel_encodes.py``),
  with and without encoding ahead;

The row of ``segment_volume``'s default on this machine is marked (not encoded ahead on a
CPU with two cores, ``inference/cores.py``).

Labels are compared with the reference-style ones object by object (differing voxels, lowest
DSC). Usage::

    python benchmarks/bench_pipeline.py --objects 5 --slices 8 --repeats 1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_setup import VolumeCase, build_model, make_predictor, nuclei_case
from mask_agreement import describe, label_agreement
from napari_swinlitemedsam.inference.cores import lookahead_for, usable_cores
from napari_swinlitemedsam.inference.cpu_features import describe_cpu
from napari_swinlitemedsam.inference.generators import run_to_end
from napari_swinlitemedsam.inference.onnx_encoder import onnx_available
from napari_swinlitemedsam.inference.volume import REFERENCE_RULES, segment_volume
from napari_swinlitemedsam.model.segmenter import PromptableSegmenter
from reference_style import reference_style_volume
from report import Row, markdown_table
from timing import measure_interleaved

SECTION = "3b pipelined 3D"
#: What the self-check chose on the AVX2-only development CPU (docs/performance.md).
CHOSEN_RUNTIME = {"litemedsam": "onnxruntime", "swin-litemedsam": "torch"}


def pipeline_section(
    models: dict[str, PromptableSegmenter],
    case: VolumeCase,
    repeats: int,
    with_chosen_runtime: bool = True,
    with_reference: bool = True,
) -> tuple[list[Row], dict]:
    """Rows and raw figures of every model; ``with_chosen_runtime`` False skips the ONNX run,
    ``with_reference`` False the reference-style run (labels are then compared with the one
    encode per slice schedule, which section 3 compares with the reference style)."""
    rows, figures = [], {"cpu": describe_cpu().summary()}
    for name, model in models.items():
        runtime = CHOSEN_RUNTIME.get(name, "torch") if with_chosen_runtime else "torch"
        model_rows, figures[name] = model_pipeline_rows(
            name, model, case, repeats, runtime, with_reference
        )
        rows += model_rows
    rows.append(
        Row(
            SECTION,
            "case and CPU",
            case.name,
            f"{case.encodes_reference()} reference-style encodes, {case.encodes_ours()} ours; "
            f"{figures['cpu']}",
        )
    )
    return rows, figures


def model_pipeline_rows(
    name: str,
    model: PromptableSegmenter,
    case: VolumeCase,
    repeats: int,
    runtime: str,
    with_reference: bool = True,
) -> tuple[list[Row], dict]:
    """Every variant of one model on ``case``, interleaved; rows and raw figures."""
    outputs = {}
    if runtime == "onnxruntime" and not onnx_available():
        runtime = "torch"

    def ours(
        label: str, lookahead: int | None, batch: int | None = 1, runtime: str = "torch"
    ) -> None:
        predictor = make_predictor(model, name, runtime=runtime)
        steps = segment_volume(
            predictor,
            case.volume,
            case.boxes,
            rules=REFERENCE_RULES,
            lookahead=lookahead,
            encode_batch=batch,
        )
        outputs[label] = run_to_end(steps)

    def reference() -> None:
        labels, _ = reference_style_volume(model, model.mask_input_always, case.volume, case.boxes)
        outputs["reference-style"] = labels

    variants = {
        "reference-style": reference,
        "one encode per slice": lambda: ours("one encode per slice", 0),
        "pipelined": lambda: ours("pipelined", 1),
    }
    if runtime != "torch":
        label = f"pipelined, {runtime}"
        variants[label] = lambda: ours(label, 1, 1, runtime)
        ours(label, 1, 1, runtime)  # untimed: exports the graph once, opens a session
        side_by_side = f"pipelined, {runtime}, 2 slices side by side"
        # None: the predictor's slices_per_encode (2 encodes at once with >= 2 threads)
        variants[side_by_side] = lambda: ours(side_by_side, 1, None, runtime)
        in_turn = f"{runtime}, 2 slices side by side, not encoded ahead"
        variants[in_turn] = lambda: ours(in_turn, 0, None, runtime)
    default = default_variant(runtime)
    if not with_reference:
        del variants["reference-style"]
    timings = measure_interleaved(variants, repeats, warmup=0)
    baseline = "reference-style" if with_reference else "one encode per slice"
    today = timings["one encode per slice"].median
    rows, figures = [], {}
    for label, timing in timings.items():
        agreement = label_agreement(outputs[label], outputs[baseline], len(case.boxes))
        numbers = {"seconds": timing.median, "vs_today": today / timing.median, **agreement}
        detail = f"{numbers['vs_today']:.2f}× one encode per slice; labels vs {baseline}: "
        if with_reference:
            numbers["vs_reference"] = timings["reference-style"].median / timing.median
            detail = f"**{numbers['vs_reference']:.2f}×** reference-style, " + detail
        numbers["compared_with"] = baseline
        figures[label] = numbers
        detail += describe(agreement)
        shown = f"{label} (the default on {usable_cores()} cores)" if label == default else label
        numbers["default"] = label == default
        rows.append(Row(SECTION, f"{name}: {shown}", str(timing), detail, numbers))
    return rows, figures


def default_variant(runtime: str) -> str:
    """The variant that is ``segment_volume``'s default on this machine with ``runtime``."""
    ahead = lookahead_for(usable_cores()) > 0
    if runtime == "torch":
        return "pipelined" if ahead else "one encode per slice"
    if ahead:
        return f"pipelined, {runtime}, 2 slices side by side"
    return f"{runtime}, 2 slices side by side, not encoded ahead"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=5)
    parser.add_argument("--slices", type=int, default=None, help="cut the stack (default all)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--models", default="litemedsam")
    args = parser.parse_args(argv)
    models = {name: build_model(name) for name in args.models.split(",") if name}
    rows, _ = pipeline_section(models, nuclei_case(args.objects, args.slices), args.repeats)
    print(f"CPU: {describe_cpu().summary()}")
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
