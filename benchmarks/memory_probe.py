"""Peak memory of encoding a long volume through the predictor's bounded cache (own process).

Usage: python benchmarks/memory_probe.py [--slices 300] [--size 512] [--model swin-litemedsam]
       [--precision fp32|bf16] [--feature-dtype fp32|fp16] [--cache-mib 1024]

Builds the model, makes a seeded random (slices, size, size) uint8 volume, encodes every slice
with a cache key (as ``segment_volume`` does) and prints one JSON line: resident memory after
loading the model, after making the volume and at the end, the peak resident memory of the
process (``VmHWM``), the cache's bytes and entries, and the seconds per slice. Encoding is
what fills memory; decoding a slice's boxes only adds a few (N, 256, 256) tensors.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_setup import build_model, make_predictor

FEATURE_DTYPES = {"fp32": None, "fp16": torch.float16}


def resident_bytes() -> int:
    """Current resident set size of this process (Linux ``/proc/self/statm``), else 0."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * resource.getpagesize()


def peak_resident_bytes() -> int:
    """Peak resident set size of this process.

    Linux: ``VmHWM`` of ``/proc/self/status`` (the high-water mark of this program's memory).
    ``ru_maxrss`` is the fallback elsewhere; on Linux it is not used because it keeps the
    parent's peak across fork + exec, which inflates it in a child of a large process.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--model", default="swin-litemedsam")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--feature-dtype", default="fp32", choices=sorted(FEATURE_DTYPES))
    parser.add_argument("--cache-mib", type=int, default=1024)
    args = parser.parse_args(argv)

    model = build_model(args.model)
    after_load = resident_bytes()
    rng = np.random.default_rng(0)
    volume = rng.integers(0, 256, size=(args.slices, args.size, args.size), dtype=np.uint8)
    after_volume = resident_bytes()
    predictor = make_predictor(
        model,
        args.model,
        cache_bytes=args.cache_mib << 20,
        precision=args.precision,
        feature_dtype=FEATURE_DTYPES[args.feature_dtype],
    )
    start = time.perf_counter()
    slice_bytes = 0
    for z in range(args.slices):
        encoded = predictor.encode(volume[z], key=("volume", z))
        slice_bytes = encoded.nbytes
    seconds = time.perf_counter() - start
    result = {
        "slices": args.slices,
        "size": args.size,
        "model": args.model,
        "precision": args.precision,
        "feature_dtype": args.feature_dtype,
        "cache_budget_bytes": args.cache_mib << 20,
        "cache_bytes": predictor.cache.nbytes,
        "cache_entries": len(predictor.cache),
        "slice_bytes": slice_bytes,
        "volume_bytes": volume.nbytes,
        "rss_after_model": after_load,
        "rss_after_volume": after_volume,
        "rss_end": resident_bytes(),
        "peak_rss": peak_resident_bytes(),
        "seconds_per_slice": seconds / args.slices,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
