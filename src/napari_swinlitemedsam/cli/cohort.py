"""``segment`` and ``embed`` on a Dask cluster (``--cluster``), and ``segment --skip-done``.

Argument parsing and printing only; the work is in :mod:`napari_swinlitemedsam.cohort`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

#: Planes per ``embed`` task on a cluster: big enough that reading and mapping a volume once
#: per range stays small next to encoding it, small enough that one volume spreads.
DEFAULT_SLICES_PER_TASK = 32


def add_cluster_arguments(parser: argparse.ArgumentParser, embed: bool = False) -> None:
    """``--cluster`` and ``--torch-threads`` (and ``--slices-per-task`` for ``embed``)."""
    parser.add_argument(
        "--cluster",
        default=None,
        metavar="SPEC",
        help="run on Dask: local (one worker process per core), local:N (N worker processes "
        "here) or a scheduler address such as tcp://HOST:8786; one task per case, one model "
        "per worker (needs the 'cluster' extra; see docs/cluster.md)",
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        metavar="T",
        help="torch threads of each cluster worker (default: cores // N for local:N; the "
        "workers' own setting for a scheduler)",
    )
    if embed:
        parser.add_argument(
            "--slices-per-task",
            type=int,
            default=DEFAULT_SLICES_PER_TASK,
            metavar="K",
            help="on a cluster, planes of one volume encoded per task "
            f"(default: {DEFAULT_SLICES_PER_TASK})",
        )


def recipe_from_args(args: argparse.Namespace):
    """The :class:`PredictorRecipe` of ``--model``, ``--device``, options and ``--cache``."""
    from napari_swinlitemedsam.cli.embed import cache_max_bytes
    from napari_swinlitemedsam.cli.main import model_options
    from napari_swinlitemedsam.cohort.recipe import PredictorRecipe

    cache = getattr(args, "cache", None)
    return PredictorRecipe(
        model=args.model,
        device=args.device,
        options=model_options(args),
        cache_folder=str(Path(cache).expanduser().resolve()) if cache else None,
        cache_max_bytes=cache_max_bytes(args) if cache else None,
        cache_dtype=getattr(args, "cache_dtype", "float32"),
    )


def _cluster_setup(args: argparse.Namespace):
    """``(spec, torch threads)``; ClusterError for bad values or no ``distributed``."""
    from napari_swinlitemedsam.cohort.cluster import (
        ClusterError,
        default_torch_threads,
        parse_cluster,
        require_distributed,
    )

    spec = parse_cluster(args.cluster)
    require_distributed()
    threads = args.torch_threads
    if threads is not None and threads < 1:
        raise ClusterError("--torch-threads must be at least 1")
    return spec, threads if threads is not None else default_torch_threads(spec)


def report_cases(outcomes, total: int, debug: bool) -> tuple[list, int, int]:
    """Print each outcome under a tqdm bar of finished cases; ``(failures, done, skipped)``."""
    from tqdm import tqdm

    failures, done, skipped = [], 0, 0
    with tqdm(total=total, desc="cases", unit="case", disable=total == 1) as bar:
        for outcome in outcomes:
            bar.update(1)
            if outcome.status == "failed":
                failures.append((outcome.case, outcome.message))
                tqdm.write(f"{outcome.case}: FAILED: {outcome.message}")
                if debug and outcome.detail:
                    tqdm.write(outcome.detail, file=sys.stderr)
            elif outcome.status == "skipped":
                skipped += 1
                tqdm.write(f"{outcome.case}: skipped, {outcome.message}")
            else:
                done += 1
                tqdm.write(f"{outcome.case}: {outcome.message}")
    return failures, done, skipped


def run_segment_on_cluster(args: argparse.Namespace, paths: list[Path], output: Path) -> int:
    """``segment --cluster``: 0 all done, 1 some cases failed, 2 the cluster cannot be used."""
    from napari_swinlitemedsam.cohort.cluster import (
        connect,
        predictor_on_workers,
        segment_cases,
    )
    from napari_swinlitemedsam.cohort.recipe import SegmentSettings

    started = time.perf_counter()
    settings = SegmentSettings(reference=args.reference, stop_when_empty=args.stop_when_empty)
    try:
        spec, threads = _cluster_setup(args)
        with (
            connect(spec) as client,
            predictor_on_workers(client, recipe_from_args(args), threads) as plugin,
        ):
            workers = len(client.scheduler_info()["workers"])
            print(f"{len(paths)} cases on {workers} Dask worker(s) ({client.scheduler.address})")
            outcomes = segment_cases(client, plugin, paths, output, settings, args.skip_done)
            failures, done, skipped = report_cases(outcomes, len(paths), args.debug)
    except ValueError as error:  # ClusterError, DiskCacheError: what to change
        print(f"error: {error}", file=sys.stderr)
        return 2
    return print_summary(failures, done, skipped, len(paths), output, started)


def print_summary(failures, done, skipped, total, output, started) -> int:
    """The closing lines of ``segment``; returns its exit code."""
    minutes = (time.perf_counter() - started) / 60
    if failures:
        print(f"{len(failures)} of {total} cases failed:", file=sys.stderr)
        for case, message in failures:
            print(f"  {case}: {message}", file=sys.stderr)
        return 1
    rate = f", {done / minutes:.1f} cases/minute" if done and minutes > 0 else ""
    kept = f" ({skipped} finished before, skipped)" if skipped else ""
    print(f"wrote {done} cases to {output}{kept}{rate}")
    return 0


def run_embed_on_cluster(args: argparse.Namespace, paths: list[Path], cache) -> int:
    """``embed --cluster``: every plane of every image into the shared cache folder."""
    from tqdm import tqdm

    from napari_swinlitemedsam.cohort.cluster import (
        connect,
        embed_images,
        predictor_on_workers,
    )

    started = time.perf_counter()
    planes: dict[str, int] = {}
    failures: dict[str, str] = {}
    encoded = cached = 0
    try:
        spec, threads = _cluster_setup(args)
        with (
            connect(spec) as client,
            predictor_on_workers(client, recipe_from_args(args), threads) as plugin,
            tqdm(desc="slices", unit="slice") as bar,
        ):
            for outcome in embed_images(client, plugin, paths, args.slices_per_task):
                if outcome.message:
                    failures.setdefault(outcome.path, outcome.message)
                    tqdm.write(f"{Path(outcome.path).name}: FAILED: {outcome.message}")
                    continue
                planes[outcome.path] = outcome.planes
                bar.total = sum(planes.values())
                bar.update(outcome.stop - outcome.start)
                encoded += outcome.encoded
                cached += outcome.cached
    except ValueError as error:  # ClusterError, DiskCacheError: what to change
        print(f"error: {error}", file=sys.stderr)
        return 2
    finished = [path for path in planes if path not in failures]
    print(
        f"{len(finished)} file(s), {encoded + cached} slice(s): {encoded} encoded, {cached} "
        f"already cached, in {time.perf_counter() - started:.1f} s; "
        f"cache {cache.folder} holds {cache.nbytes / (1 << 20):.0f} MiB"
    )
    if failures:
        print(f"{len(failures)} file(s) failed:", file=sys.stderr)
        for path, message in failures.items():
            print(f"  {path}: {message}", file=sys.stderr)
        return 1
    return 0
