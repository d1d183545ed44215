"""``swinlitemedsam segment``: challenge ``.npz`` cases and zarr stacks to masks.

``.npz`` cases (files or folders) get ``segs/*.npz`` as the challenge writes them; zarr stacks,
with their 3D boxes from ``--boxes``, get a zarr store of labels written slice by slice. In this
process (one model, the inputs one after another) or, with ``--cluster``, on a dask cluster
(``.npz`` cases only).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from napari_swinlitemedsam.cli.main import announce_predictor


def run_segment(args: argparse.Namespace) -> int:
    from napari_swinlitemedsam.cohort.zarr_cases import BoxesFileError, read_boxes_file
    from napari_swinlitemedsam.io.challenge_io import ChallengeFileError, iter_cases
    from napari_swinlitemedsam.io.zarr_stacks import is_zarr_path

    stacks = [Path(item) for item in args.inputs if is_zarr_path(item) and Path(item).is_dir()]
    try:
        cases = [item for item in args.inputs if Path(item) not in stacks]
        paths = iter_cases(cases) if cases else []
        boxes = read_boxes_file(args.boxes) if stacks and args.boxes else None
    except (ChallengeFileError, BoxesFileError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if stacks and boxes is None:
        print(
            "error: zarr stacks need their 3D boxes: add --boxes FILE (.npy or CSV)",
            file=sys.stderr,
        )
        return 2
    if not paths and not stacks:
        print("error: no .npz cases or .zarr stacks found in the inputs", file=sys.stderr)
        return 2
    output = Path(args.output)
    if args.cluster:
        if stacks:
            print(
                "error: --cluster segments .npz cases; segment zarr stacks without it",
                file=sys.stderr,
            )
            return 2
        from napari_swinlitemedsam.cli.cohort import run_segment_on_cluster

        return run_segment_on_cluster(args, paths, output)
    return _segment_here(args, paths, output, stacks, boxes)


def _segment_here(
    args: argparse.Namespace, paths: list[Path], output: Path, stacks=(), boxes=None
) -> int:
    """``segment`` in this process: one model, the cases one after another, then the zarr
    ``stacks`` with ``boxes`` (labels written slice by slice into zarr stores)."""
    from tqdm import tqdm

    from napari_swinlitemedsam.cli.cohort import print_summary, recipe_from_args, report_cases
    from napari_swinlitemedsam.cohort.cases import segment_one
    from napari_swinlitemedsam.cohort.recipe import SegmentSettings
    from napari_swinlitemedsam.cohort.zarr_cases import segment_store
    from napari_swinlitemedsam.inference.disk_cache import DiskCacheError
    from napari_swinlitemedsam.model.checkpoint import CheckpointError

    started = time.perf_counter()
    try:
        predictor = announce_predictor(recipe_from_args(args).build)
    except (CheckpointError, DiskCacheError, ValueError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    output.mkdir(parents=True, exist_ok=True)
    settings = SegmentSettings(reference=args.reference, stop_when_empty=args.stop_when_empty)

    def outcomes():
        for path in [*paths, *stacks]:
            with tqdm(desc=path.name, unit="slice", leave=False) as bar:

                def advance(progress) -> None:
                    bar.total = progress.total
                    bar.n = progress.done
                    bar.refresh()

                if path in stacks:
                    yield segment_store(
                        predictor, path, boxes, output, settings, args.skip_done, advance
                    )
                else:
                    yield segment_one(predictor, path, output, settings, args.skip_done, advance)

    total = len(paths) + len(stacks)
    failures, done, skipped = report_cases(outcomes(), total, args.debug)
    return print_summary(failures, done, skipped, total, output, started)
