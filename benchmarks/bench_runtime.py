"""Section "runtime": what ``precision="auto"``/``runtime="auto"`` choose on this machine, what
the choice gains over torch fp32, and what the one-time self-check costs.

For each model:

* the self-check, cold (empty decision cache and no exported ONNX graph: export + measure) and
  cached (the decision read back), as ``BoxPredictor.from_pretrained`` runs it;
* a first use as the napari annotator makes it (``self_check="later"``): the first mask on
  torch fp32, then the check's steps (the longest is the longest a box can wait for one);
* encode latency of torch fp32 and of the chosen runtime, interleaved in the same rounds, with
  the largest feature difference and the masks' DSC on the self-check's real slices;
* on a CPU without native bfloat16, one fp32 and one bf16 encode (the slowdown quoted by the
  warning for an explicit bf16), when ``emulated_bf16`` is set (a few minutes per model).

Run: ``python benchmarks/run_benchmarks.py --sections runtime``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from bench_setup import prompts_of
from napari_swinlitemedsam.inference.cpu_features import describe_cpu
from napari_swinlitemedsam.inference.embedding_cache import EmbeddingCache
from napari_swinlitemedsam.inference.onnx_encoder import EXPORT_DIR_ENV
from napari_swinlitemedsam.inference.predictor import BoxPredictor
from napari_swinlitemedsam.inference.runtime_choice import (
    BASELINE,
    Candidate,
    bundled_check_cases,
    choose_runtime,
)
from napari_swinlitemedsam.inference.runtime_setup import build_measured
from napari_swinlitemedsam.model.segmenter import PromptableSegmenter
from report import Row
from timing import fmt_seconds, measure_interleaved

SECTION = "7 runtime"


def _predictor(model, name, candidate: Candidate) -> BoxPredictor:
    return BoxPredictor(
        model,
        prompts_of(name),
        EmbeddingCache(),
        name,
        precision=candidate.precision,
        runtime=candidate.runtime,
    )


def _dsc(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def _agreement(model, name, chosen: Candidate) -> tuple[float, float]:
    """Largest |feature difference| and lowest per-object mask DSC, chosen vs torch fp32,
    over the self-check's real slices."""
    reference, ours = _predictor(model, name, BASELINE), _predictor(model, name, chosen)
    worst_feature, worst_dsc = 0.0, 1.0
    for case in bundled_check_cases():
        a, b = reference.set_image(case.image), ours.set_image(case.image)
        for key, tensor in a.features.tensors().items():
            other = b.features.tensors()[key].float()
            worst_feature = max(worst_feature, float((other - tensor.float()).abs().max()))
        masks_a, masks_b = reference.predict(case.boxes).masks, ours.predict(case.boxes).masks
        worst_dsc = min([worst_dsc, *(_dsc(x, y) for x, y in zip(masks_a, masks_b, strict=True))])
    return worst_feature, worst_dsc


def runtime_section(
    models: dict[str, PromptableSegmenter], repeats: int, emulated_bf16: bool = False
) -> tuple[list[Row], dict]:
    cpu = describe_cpu()
    rows, figures = [], {"cpu": cpu.summary()}
    image = bundled_check_cases()[0].image
    for name, model in models.items():
        choice, (cold, warm), cached_how, timings, feature_diff, dsc = _measure_model(
            model, name, image, repeats
        )
        chosen = Candidate(choice.runtime, choice.precision)
        base = timings["torch fp32"]
        mine = timings.get(f"chosen {chosen.label}", base)
        speedup = base.median / mine.median
        rows.append(
            Row(
                SECTION,
                f"{name}: auto chooses",
                choice.label,
                "self-check "
                + ", ".join(f"{k} {fmt_seconds(v)}" for k, v in choice.seconds.items())
                + (f"; rejected {choice.rejected}" if choice.rejected else ""),
                {"choice": choice.label, "seconds": choice.seconds, "rejected": choice.rejected},
            )
        )
        rows.append(
            Row(
                SECTION,
                f"{name}: auto decodes later boxes on",
                choice.decoder,
                "self-check, one box: "
                + ", ".join(f"{k} {fmt_seconds(v)}" for k, v in choice.box_seconds.items()),
                {"decoder": choice.decoder, "box_seconds": choice.box_seconds},
            )
        )
        rows.append(
            Row(
                SECTION,
                f"{name}: self-check cost, first use / cached",
                f"{fmt_seconds(cold)} / {fmt_seconds(warm)}",
                f"first use includes the ONNX export; then: {cached_how}",
                {"cold_s": cold, "cached_s": warm},
            )
        )
        deferred = _first_use_deferred(model, name, bundled_check_cases()[0])
        rows.append(
            Row(
                SECTION,
                f"{name}: first use in the annotator (self-check deferred)",
                f"first mask {fmt_seconds(deferred['ready_s'] + deferred['first_mask_s'])}",
                f"ready {fmt_seconds(deferred['ready_s'])} on torch fp32 (blocking: "
                f"{fmt_seconds(cold)}); then the check in {deferred['steps']} steps, "
                f"{fmt_seconds(deferred['check_s'])} in all, the longest "
                f"{fmt_seconds(deferred['longest_step_s'])} (a box's longest wait); "
                f"then: {deferred['runs']}",
                deferred,
            )
        )
        rows.append(
            Row(
                SECTION,
                f"{name}: encode torch fp32 / chosen",
                f"{base} / {mine}",
                f"**{speedup:.2f}x** faster; features differ by ≤ {feature_diff:.1e}, "
                f"masks DSC ≥ {dsc:.4f} on the check slices",
                {"torch_s": base.median, "chosen_s": mine.median, "speedup": speedup},
            )
        )
        figures[name] = {
            "choice": choice.label,
            "decoder": choice.decoder,
            "self_check_cold_s": cold,
            "self_check_cached_s": warm,
            "first_use_deferred": deferred,
            "speedup": speedup,
            "feature_diff": feature_diff,
            "mask_dsc_min": dsc,
        }
        if emulated_bf16 and cpu.native_bf16 is not True:
            rows.append(_emulated_bf16_row(model, name, image, figures[name]))
    return rows, figures


@contextlib.contextmanager
def _first_use_folders():
    """A temporary folder whose ``onnx`` subfolder holds the exported graphs meanwhile (so
    nothing exported earlier is reused) and whose ``choice`` subfolder is for decisions."""
    with tempfile.TemporaryDirectory() as folder:
        previous = os.environ.get(EXPORT_DIR_ENV)
        os.environ[EXPORT_DIR_ENV] = str(Path(folder) / "onnx")
        try:
            yield Path(folder)
        finally:
            if previous is None:
                os.environ.pop(EXPORT_DIR_ENV, None)
            else:
                os.environ[EXPORT_DIR_ENV] = previous


def _first_use_deferred(model, name, case) -> dict:
    """A first use as the napari annotator sees it (empty decision and export folders): the
    predictor starts on torch fp32, gives the first mask, then runs the self-check a step at a
    time (a box drawn meanwhile waits at most one step)."""
    with _first_use_folders() as folder:
        started = time.perf_counter()
        predictor = build_measured(
            BoxPredictor,
            model,
            prompts_of(name),
            name,
            EmbeddingCache(),
            choice_dir=folder / "choice",
            self_check="later",
        )
        ready = time.perf_counter() - started
        predictor.set_image(case.image)
        predictor.predict(case.boxes[:1])
        first_mask = time.perf_counter() - started - ready
        steps = []
        check = predictor.pending_self_check
        while check is not None:
            began = time.perf_counter()
            finished = check.step()
            steps.append(time.perf_counter() - began)
            if finished:
                break
    return {
        "ready_s": ready,
        "first_mask_s": first_mask,
        "steps": len(steps),
        "longest_step_s": max(steps, default=0.0),
        "check_s": sum(steps),
        "runs": predictor.describe_runtimes(),
    }


def _measure_model(model, name, image, repeats):
    """Self-check cold and cached (in temporary folders), then torch fp32 vs the choice."""
    with _first_use_folders() as folder:
        seconds = []
        for _ in range(2):  # first use, then the decision read back
            started = time.perf_counter()
            choice = choose_runtime(
                model,
                lambda c: _predictor(model, name, c),
                choice_dir=folder / "choice",
            )
            seconds.append(time.perf_counter() - started)
            if not seconds[1:]:
                first = choice
        chosen = Candidate(first.runtime, first.precision)
        runs = {"torch fp32": _predictor(model, name, BASELINE)}
        if chosen != BASELINE:
            runs[f"chosen {chosen.label}"] = _predictor(model, name, chosen)
        timings = measure_interleaved(
            {label: (lambda p=p: p.set_image(image)) for label, p in runs.items()}, repeats
        )
        feature_diff, dsc = _agreement(model, name, chosen)
    return first, seconds, choice.how, timings, feature_diff, dsc


def _emulated_bf16_row(model, name, image, figures: dict) -> Row:
    fp32 = _predictor(model, name, BASELINE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the emulation warning is what this row measures
        bf16 = BoxPredictor(model, prompts_of(name), EmbeddingCache(), name, precision="bf16")
    timings = measure_interleaved(
        {"fp32": lambda: fp32.set_image(image), "bf16": lambda: bf16.set_image(image)},
        repeats=1,
        warmup=0,  # an emulated bf16 encode takes minutes; its set-up is a small part of it
    )
    slowdown = timings["bf16"].median / timings["fp32"].median
    figures["emulated_bf16_slowdown"] = slowdown
    return Row(
        SECTION,
        f"{name}: explicit bf16 without native bf16",
        f"{fmt_seconds(timings['bf16'].median)} vs {fmt_seconds(timings['fp32'].median)} fp32",
        f"**{slowdown:.1f}x slower** (one encode each, no warm-up)",
        {"slowdown": slowdown},
    )


def main(argv: list[str] | None = None) -> int:
    """``python benchmarks/bench_runtime.py [--models litemedsam] [--repeats 3] [--emulated-bf16]``:
    this section alone, printed as a Markdown table with the CPU line."""
    import argparse

    from bench_setup import MODEL_NAMES, build_model
    from report import markdown_table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODEL_NAMES))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--emulated-bf16", action="store_true")
    args = parser.parse_args(argv)
    models = {name: build_model(name) for name in args.models.split(",") if name}
    rows, figures = runtime_section(models, args.repeats, args.emulated_bf16)
    print(f"CPU: {figures['cpu']}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
