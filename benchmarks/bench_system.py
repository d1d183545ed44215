"""Sections 4-6: start-up, peak memory of a long volume, and the SAM ViT-B peer.

Start-up and memory run in fresh Python processes (so that imports and peak memory are those
of a new session, not of this benchmark process).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench_setup import REPO_ROOT, synthetic_swin_state_dict
from napari_swinlitemedsam.inference.precision import encoder_context, encoder_input
from report import Row
from sam_vit_b import SamViTB, build_sam_vit_b
from timing import count_flops, fmt_seconds, measure_interleaved

BENCH_DIR = Path(__file__).resolve().parent
MIB = 1 << 20

LOAD_SCRIPT = """
import json, statistics, sys, time
start = time.perf_counter()
from napari_swinlitemedsam.inference.predictor import BoxPredictor
from napari_swinlitemedsam.io.samples import load_sample
imported = time.perf_counter()
predictor = BoxPredictor.from_pretrained(sys.argv[1], device="cpu", runtime=sys.argv[2])
loaded = time.perf_counter()
ready_at = time.time()  # wall clock, compared with the parent's launch time
sample = load_sample("nuclei2d")
opened = time.perf_counter()
predictor.set_image(sample.image)
mask = predictor.predict([[180, 200, 240, 260]]).masks[0]
first = time.perf_counter()
# the widget's case once the model is loaded: a new 512² image (mirrored, so no cache holds it)
other = sample.image[:, ::-1].copy()
began = time.perf_counter()
predictor.set_image(other)
predictor.predict([[180, 200, 240, 260]])
warm_first = time.perf_counter() - began
later = []
for x in range(20, 420, 40):  # later boxes on the same image, one call each
    began = time.perf_counter()
    predictor.predict([[x, 100, x + 60, 170]])
    later.append(time.perf_counter() - began)
print(json.dumps({"import_s": imported - start, "load_s": loaded - imported,
                  "read_sample_s": opened - loaded, "first_mask_s": first - opened,
                  "warm_first_mask_s": warm_first, "later_box_s": statistics.median(later),
                  "encoder": predictor.runtime_choice.label,
                  "decoder": predictor.decoder_runtime, "ready_at": ready_at}))
"""


def _python(args: list[str], timeout: float = 600) -> str:
    """Stdout of ``python args`` in a fresh process."""
    done = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO_ROOT,
        check=True,
    )
    return done.stdout


def _launch_to_imported(module: str) -> float:
    """Seconds from launching a fresh ``python`` to ``module`` imported in it (the process's
    exit afterwards is not counted)."""
    launched = time.time()
    out = _python(["-c", f"import time, {module}; print(time.time())"])
    return float(out.strip().splitlines()[-1]) - launched


def startup_section(repeats: int, runtime: str = "auto") -> tuple[list[Row], dict]:
    """Fresh-process wall time of imports and of loading each model's weights.

    ``runtime`` "auto" (what a user gets) reads the self-check's cached decision, measuring
    first where there is none (then in the first process: the median hides it); the quick run
    forces "torch" so that no fresh process spends a self-check.
    """
    section = "4 start-up"
    modules = {
        "python -c 'import torch'": "torch",
        "import ...inference.predictor": "napari_swinlitemedsam.inference.predictor",
        "import napari_swinlitemedsam (plugin entry)": "napari_swinlitemedsam",
    }
    rows, figures = [], {}
    for label, module in modules.items():
        samples = [_launch_to_imported(module) for _ in range(repeats)]
        median = sorted(samples)[len(samples) // 2]
        figures[label] = median
        rows.append(
            Row(
                section,
                label,
                fmt_seconds(median),
                f"launch to imported, median of {repeats} fresh processes",
                {"seconds": median},
            )
        )
    with tempfile.TemporaryDirectory() as folder:
        swin_file = Path(folder) / "swin_synthetic.pth"
        torch.save(synthetic_swin_state_dict(), swin_file)
        for name, source in (("litemedsam", "litemedsam"), ("swin-litemedsam", str(swin_file))):
            runs = []
            for _ in range(repeats):
                launched = time.time()
                out = _python(["-c", LOAD_SCRIPT, source, runtime])
                parts = json.loads(out.strip().splitlines()[-1])
                # launch to ready: interpreter start, imports, weights (not the exit at the end)
                runs.append((parts["ready_at"] - launched, parts))
            runs.sort(key=lambda run: run[0])
            ready, parts = runs[len(runs) // 2]
            figures[f"{name} import+load"] = ready
            figures[f"{name} first mask"] = parts["first_mask_s"]
            rows.append(
                Row(
                    section,
                    f"{name}: new process → predictor ready",
                    fmt_seconds(ready),
                    f"import {fmt_seconds(parts['import_s'])} + weights "
                    f"{fmt_seconds(parts['load_s'])} (+ interpreter start); "
                    f"median of {repeats}",
                    {"seconds": ready, **parts},
                )
            )
            figures[f"{name} warm first mask"] = parts["warm_first_mask_s"]
            figures[f"{name} later box"] = parts["later_box_s"]
            timed = (
                (
                    "first_mask_s",
                    "image → first mask (cold predictor)",
                    "nuclei2d 512²: intensity mapping, encode, one box decoded; the compute "
                    f"behind the widget's first mask; encoder {parts['encoder']}",
                ),
                (
                    "warm_first_mask_s",
                    "next 512² image → first mask (model warm)",
                    "a second image in the same process: what each new image costs",
                ),
                (
                    "later_box_s",
                    "a later box on the same image",
                    "median of 10 boxes, one decoder call each (slice already encoded); "
                    f"decoder {parts['decoder']}",
                ),
            )
            for key, label, note in timed:
                seconds = parts[key]
                rows.append(
                    Row(
                        section,
                        f"{name}: {label}",
                        fmt_seconds(seconds),
                        note,
                        {"seconds": seconds},
                    )
                )
    return rows, figures


def memory_section(slices: int, size: int, runs: list[dict]) -> tuple[list[Row], dict]:
    """Peak resident memory of encoding ``slices`` slices of size² through the bounded cache."""
    section = "5 memory"
    rows, figures = [], {}
    for options in runs:
        args = [str(BENCH_DIR / "memory_probe.py"), "--slices", str(slices), "--size", str(size)]
        for key, value in options.items():
            args += [f"--{key.replace('_', '-')}", str(value)]
        out = _python(args, timeout=3600)
        result = json.loads(out.strip().splitlines()[-1])
        label = ", ".join(f"{k}={v}" for k, v in options.items()) or "defaults"
        figures[label] = result
        unbounded = result["slice_bytes"] * slices
        rows.append(
            Row(
                section,
                f"{slices}×{size}² volume, {result['model']} ({label})",
                f"peak RSS {result['peak_rss'] / MIB:.0f} MiB",
                f"after model load {result['rss_after_model'] / MIB:.0f} MiB; cache "
                f"{result['cache_bytes'] / MIB:.0f} MiB in {result['cache_entries']} slices "
                "(budget "
                f"{result['cache_budget_bytes'] / MIB:.0f} MiB; unbounded it would be "
                f"{unbounded / MIB:.0f} MiB); {fmt_seconds(result['seconds_per_slice'])}/slice",
                result,
            )
        )
    return rows, figures


def peer_section(
    repeats: int,
    image_size: int,
    swin_fp32_s: float | None,
    warmup: int = 1,
    with_bf16: bool = True,
) -> tuple[list[Row], dict]:
    """SAM ViT-B image encoder (random weights) at ``image_size``², fp32 and (``with_bf16``)
    bf16."""
    section = "6 peer"
    model = build_sam_vit_b() if image_size == 1024 else _small_vit(image_size)
    images = torch.rand(1, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        flops = count_flops(lambda: model(images))

    def run(precision: str):
        prepared = encoder_input(images, precision)

        def forward() -> None:
            with torch.inference_mode(), encoder_context(precision, images.device):
                model(prepared)

        return forward

    variants = {"fp32": run("fp32"), "bf16": run("bf16")} if with_bf16 else {"fp32": run("fp32")}
    timings = measure_interleaved(variants, repeats, warmup)
    fp32 = timings["fp32"]
    params = sum(p.numel() for p in model.parameters())
    versus = ""
    if swin_fp32_s:
        versus = f"; {fp32.median / swin_fp32_s:.1f}× our Swin-LiteMedSAM slice encode"
    rows = [
        Row(
            section,
            f"SAM ViT-B encoder {image_size}², fp32",
            str(fp32),
            f"{params / 1e6:.1f} M parameters, {flops / 1e9:.0f} GFLOPs, random weights{versus}",
            {"seconds": fp32.median, "flops": flops},
        )
    ]
    figures = {"fp32_s": fp32.median, "flops": flops}
    if with_bf16:
        bf16 = timings["bf16"]
        rows.append(
            Row(
                section,
                f"SAM ViT-B encoder {image_size}², bf16 autocast",
                str(bf16),
                f"{fp32.median / bf16.median:.2f}× faster than its fp32",
                {"seconds": bf16.median},
            )
        )
        figures["bf16_s"] = bf16.median
    return rows, figures


def _small_vit(image_size: int) -> SamViTB:
    """The same architecture on a smaller input (short runs only)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return SamViTB(image_size=image_size).eval()
