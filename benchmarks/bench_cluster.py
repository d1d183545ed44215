"""Cohort throughput: one process (all cores to torch) against ``--cluster local:N`` (N worker
processes, cores // N torch threads each), same 8 cases, same real LiteMedSAM weights.

Usage: python benchmarks/bench_cluster.py [WORKDIR] [--workers N]

The cases are cut from the bundled real nuclei2d image (challenge format): eight 256 x 256
tiles, each with the tight ground-truth boxes of up to 8 nuclei, so that a case costs about one
encode (the main cost of a case of any size) and one batched decode. Both runs go through the
code ``segment`` uses (``cohort.cases.segment_one`` here, the Dask tasks there); model loading
and cluster start-up are reported separately and are not in cases/minute. The outputs of the
two runs are compared pixel by pixel.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from napari_swinlitemedsam.cohort import cluster
from napari_swinlitemedsam.cohort.cases import DONE, segment_one
from napari_swinlitemedsam.cohort.recipe import (
    PredictorRecipe,
    SegmentSettings,
    torch_threads_per_worker,
)
from napari_swinlitemedsam.inference.cores import usable_cores
from napari_swinlitemedsam.inference.intensity import to_uint8
from napari_swinlitemedsam.io.samples import load_sample
from sample_cases import tight_boxes

RECIPE = PredictorRecipe(model="litemedsam", device="cpu")
# Eight 256 x 256 tiles of the 512 x 512 nuclei image (overlapping), at most 8 boxes each
TILES = [(0, 0), (0, 256), (256, 0), (256, 256), (128, 128), (0, 128), (128, 0), (256, 128)]
BOXES = 8


def write_cases(folder: Path) -> list[Path]:
    """The 8 benchmark cases as challenge ``.npz`` files in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    nuclei = load_sample("nuclei2d")
    image = to_uint8(nuclei.image)
    for top, left in TILES:
        window = np.s_[top : top + 256, left : left + 256]
        boxes, _ = tight_boxes(nuclei.labels[window])
        rgb = np.repeat(image[window][:, :, None], 3, axis=2)
        np.savez(folder / f"2D_nuclei_{top}_{left}.npz", imgs=rgb, boxes=boxes[:BOXES])
    return sorted(folder.glob("*.npz"))


def one_process(paths: list[Path], out: Path) -> tuple[float, float]:
    """(model load seconds, cases seconds) in this process with every core for torch."""
    torch.set_num_threads(usable_cores())
    started = time.perf_counter()
    predictor = RECIPE.build()
    loaded = time.perf_counter()
    for path in paths:
        outcome = segment_one(predictor, path, out, SegmentSettings())
        assert outcome.status == DONE, outcome.message
    return loaded - started, time.perf_counter() - loaded


def on_local_cluster(paths: list[Path], out: Path, workers: int) -> tuple[float, float]:
    """(start-up + model load seconds, cases seconds) on ``local:workers``."""
    started = time.perf_counter()
    threads = torch_threads_per_worker(workers)
    spec = cluster.ClusterSpec(local_workers=workers)
    with (
        cluster.connect(spec) as client,
        cluster.predictor_on_workers(client, RECIPE, threads) as plugin,
    ):
        ready = time.perf_counter()
        for outcome in cluster.segment_cases(client, plugin, paths, out, SegmentSettings()):
            assert outcome.status == DONE, outcome.message
        finished = time.perf_counter()
    return ready - started, finished - ready


def compare(paths: list[Path], left: Path, right: Path) -> tuple[int, int]:
    """(differing label pixels, all pixels) between the two runs' outputs."""
    differing = total = 0
    for path in paths:
        a, b = np.load(left / path.name)["segs"], np.load(right / path.name)["segs"]
        differing += int(np.count_nonzero(a != b))
        total += a.size
    return differing, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", nargs="?", default=None)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    root = Path(args.workdir or tempfile.mkdtemp(prefix="bench-cluster-"))
    paths = write_cases(root / "cases")
    print(f"{len(paths)} cases in {root / 'cases'}; {usable_cores()} usable cores")
    load_one, seconds_one = one_process(paths, root / "one")
    setup_cluster, seconds_cluster = on_local_cluster(paths, root / "cluster", args.workers)
    differing, total = compare(paths, root / "one", root / "cluster")
    rate_one = 60 * len(paths) / seconds_one
    rate_cluster = 60 * len(paths) / seconds_cluster
    threads = torch_threads_per_worker(args.workers)
    print(
        f"one process ({usable_cores()} torch threads): {rate_one:.1f} cases/min "
        f"({seconds_one:.1f} s; model load {load_one:.1f} s)"
    )
    print(
        f"local:{args.workers} ({threads} torch thread(s) each): {rate_cluster:.1f} cases/min "
        f"({seconds_cluster:.1f} s; cluster start + model loads {setup_cluster:.1f} s)"
    )
    print(f"ratio local:{args.workers} / one process: {rate_cluster / rate_one:.2f}x")
    print(f"outputs: {differing} of {total} label pixels differ")
    print(
        f"per case and worker: {seconds_one / len(paths):.2f} s (one process), "
        f"{args.workers * seconds_cluster / len(paths):.2f} s (cluster worker)"
    )


if __name__ == "__main__":
    sys.exit(main())
