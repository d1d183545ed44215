"""The speed benchmark suite: prints a Markdown table of medians and same-run ratios.

Usage:
    python benchmarks/run_benchmarks.py            # full run (about an hour on 2 cores)
    python benchmarks/run_benchmarks.py --quick    # short run on tiny inputs (a few minutes)
    python benchmarks/run_benchmarks.py --sections encoder,decode --json results.json

Sections: ``encoder`` (1: latency per slice vs the matmul floor), ``decode`` (2: box -> mask
with a cached slice, batched and one at a time, vs reference-style), ``volume`` (3: multi-object
3D case vs a reference-style pipeline, labels compared object by object), ``pipeline`` (3b: the
same case, the pipelined propagation vs one encode per slice vs reference-style), ``startup`` (4),
``memory`` (5: a 300-slice 512² volume through the bounded cache), ``peer`` (6: SAM ViT-B at 1024²),
``accuracy`` (DSC change of the bf16 and float16-cache paths on the bundled real images),
``runtime`` (7: what precision/runtime "auto" choose here, their gain over torch fp32 and the
self-check's cost; full runs only).

Swin-LiteMedSAM runs with deterministic synthetic weights (see ``bench_setup``), LiteMedSAM with
its real weights. Every figure is a median over repetitions, with its minimum and spread
(interquartile range / median); variants that are compared are measured interleaved. The
machine, torch version, threads and the load average before and after are printed with the
table: on a shared machine, compare ratios from one run rather than absolute times across runs.
See docs/performance.md for a full run and its reading.

bfloat16 rows (encoder, 3D, accuracy, memory, peer) are measured only where the CPU computes
bfloat16 natively: emulated, one bf16 encode costs ~18 float32 ones (a full run would take hours)
and ``precision="auto"`` never picks it there. The emulated case itself is measured once, in the
runtime section of a full run (``emulated_bf16``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_accuracy import accuracy_section
from bench_decoder import decoder_section
from bench_encoder import encoder_section
from bench_pipeline import pipeline_section
from bench_runtime import runtime_section
from bench_setup import MODEL_NAMES, build_model, nuclei_case
from bench_system import memory_section, peer_section, startup_section
from bench_volume import volume_section
from napari_swinlitemedsam.inference.cpu_features import describe_cpu
from napari_swinlitemedsam.inference.heap_reuse import keep_freed_buffers
from napari_swinlitemedsam.inference.precision import native_bf16_cpu
from report import Row, as_json_ready, markdown_table

SECTIONS = (
    "encoder",
    "decode",
    "volume",
    "pipeline",
    "startup",
    "memory",
    "peer",
    "accuracy",
    "runtime",
)


@dataclass(frozen=True)
class Settings:
    """How long each section runs."""

    repeats: int
    warmup: int  # untimed rounds before the timed ones (0 in quick mode: figures are indicative)
    matmul_size: int
    volume_objects: int
    volume_slices: int | None  # None: the whole 60-slice stack
    accuracy_boxes_2d: int | None
    accuracy_samples_3d: tuple[str, ...]
    startup_repeats: int
    memory_slices: int
    memory_size: int
    memory_runs: tuple[dict, ...]
    peer_size: int
    peer_repeats: int
    runtime_repeats: int  # 0: no runtime section (it exports and self-checks each model)
    emulated_bf16: bool


FULL = Settings(
    repeats=7,
    warmup=1,
    matmul_size=2048,
    volume_objects=5,
    volume_slices=None,
    accuracy_boxes_2d=None,
    accuracy_samples_3d=("brain_mr", "nuclei3d"),
    startup_repeats=3,
    memory_slices=300,
    memory_size=512,
    memory_runs=({}, {"precision": "bf16", "feature_dtype": "fp16"}),
    peer_size=1024,
    peer_repeats=3,
    runtime_repeats=5,
    emulated_bf16=True,
)
QUICK = Settings(
    repeats=1,
    warmup=0,
    matmul_size=1024,
    volume_objects=2,
    volume_slices=3,
    accuracy_boxes_2d=3,
    accuracy_samples_3d=(),
    startup_repeats=1,
    memory_slices=3,
    memory_size=128,
    memory_runs=({"cache_mib": 32, "feature_dtype": "fp16"},),
    peer_size=256,
    peer_repeats=1,
    runtime_repeats=0,
    emulated_bf16=False,
)


def machine_description() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpu_flags": describe_cpu().summary(),
        "logical_cpus": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "native_bf16": native_bf16_cpu(),
        "python": platform.python_version(),
    }


def load_average() -> str:
    try:
        return " / ".join(f"{value:.1f}" for value in os.getloadavg())
    except OSError:
        return "n/a"


def run(
    quick: bool = False, sections: tuple[str, ...] = SECTIONS, models: tuple[str, ...] = MODEL_NAMES
) -> tuple[list[Row], dict]:
    """Run the chosen sections; returns the rows and the raw figures (for JSON and tests)."""
    settings = QUICK if quick else FULL
    built = {name: build_model(name) for name in models}
    rows: list[Row] = []
    figures: dict = {
        "machine": machine_description(),
        "quick": quick,
        "load_average_start": load_average(),
    }
    started = time.perf_counter()
    # bfloat16 only where it is native (emulated, one encode costs ~20 fp32 ones)
    with_bf16 = bool(figures["machine"]["native_bf16"])
    memory_runs = [
        options if with_bf16 else {k: v for k, v in options.items() if k != "precision"}
        for options in settings.memory_runs
    ]
    steps = {
        "encoder": lambda: encoder_section(
            built,
            settings.repeats,
            settings.matmul_size,
            with_onnx=not quick,
            warmup=settings.warmup,
            with_bf16=with_bf16,
        ),
        "decode": lambda: decoder_section(built, settings.repeats, warmup=settings.warmup),
        "volume": lambda: volume_section(
            built,
            nuclei_case(settings.volume_objects, settings.volume_slices),
            repeats=1,
            with_bf16=with_bf16,
        ),
        "pipeline": lambda: pipeline_section(
            # quick mode: the default model only (the volume section covers both schedules)
            {name: model for name, model in built.items() if not quick or name == "litemedsam"},
            nuclei_case(settings.volume_objects, settings.volume_slices),
            repeats=1,
            with_chosen_runtime=not quick,
            with_reference=not quick,  # quick: section 3 already ran the reference style
        ),
        "accuracy": lambda: accuracy_section(
            built, settings.accuracy_boxes_2d, settings.accuracy_samples_3d, with_bf16
        ),
        "startup": lambda: startup_section(
            settings.startup_repeats, runtime="torch" if quick else "auto"
        ),
        "memory": lambda: memory_section(settings.memory_slices, settings.memory_size, memory_runs),
        "runtime": lambda: runtime_section(built, settings.runtime_repeats, settings.emulated_bf16),
        "peer": lambda: peer_section(
            settings.peer_repeats,
            settings.peer_size,
            figures.get("encoder", {}).get("swin-litemedsam", {}).get("fp32"),
            warmup=settings.warmup,
            with_bf16=with_bf16,
        ),
    }
    for section, step in steps.items():
        if section not in sections or (section == "runtime" and not settings.runtime_repeats):
            continue
        began = time.perf_counter()
        new_rows, figures[section] = step()
        rows += new_rows
        print(
            f"[{section}: {time.perf_counter() - began:.0f} s, load {load_average()}]",
            file=sys.stderr,
            flush=True,
        )
    figures["load_average_end"] = load_average()
    figures["wall_s"] = time.perf_counter() - started
    return rows, figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run on tiny inputs")
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of {','.join(SECTIONS)}",
    )
    parser.add_argument("--models", default=",".join(MODEL_NAMES))
    parser.add_argument("--json", type=Path, help="also write rows and raw figures here")
    args = parser.parse_args(argv)
    sections = tuple(s for s in args.sections.split(",") if s)
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    models = tuple(m for m in args.models.split(",") if m)
    # As the package does where it loads a model for use (BoxPredictor.from_pretrained): every
    # section, the reference-style baselines included, runs with freed buffers kept.
    kept = keep_freed_buffers()
    rows, figures = run(args.quick, sections, models)
    machine = figures["machine"]
    machine["freed_buffers_kept"] = kept
    print(
        f"Machine: {machine['cpu_flags']}, {machine['logical_cpus']} logical CPUs, torch "
        f"{machine['torch']} ({machine['threads']} threads), native bf16: "
        f"{machine['native_bf16']}, Python {machine['python']}, freed buffers kept: {kept}"
    )
    print(
        f"Load average (1/5/15 min) at start {figures['load_average_start']}, at end "
        f"{figures['load_average_end']}; wall time {figures['wall_s']:.0f} s"
        f"{' (quick mode)' if args.quick else ''}"
    )
    print()
    print(markdown_table(rows))
    if args.json:
        args.json.write_text(
            json.dumps({"rows": as_json_ready(rows), "figures": figures}, indent=1, default=str)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
