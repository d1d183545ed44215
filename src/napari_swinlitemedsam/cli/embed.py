"""``swinlitemedsam embed``: fill an embedding cache on disk ahead of labelling or segmenting.

Every slice of every input is encoded once and stored in a :class:`DiskEmbeddingCache`; slices
already there are skipped without being read. Later runs of ``segment --cache DIR``, the
``annotate`` command and the widget with the same cache folder and model then find them.

Inputs are files (TIFF, PNG/JPEG, challenge ``.npz``, NIfTI with ``nibabel``) and folders
(their supported files, not recursive). Stacks are mapped to uint8 with one intensity mapping
for the whole stack, exactly as ``segment`` and the widget do, so that the cache keys match.

Building the parser imports nothing heavy (no torch); the work functions import it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from napari_swinlitemedsam.inference.disk_cache import DiskEmbeddingCache
    from napari_swinlitemedsam.inference.predictor import BoxPredictor
    from napari_swinlitemedsam.io.image_files import LoadedImage

#: The default of ``--cache-max-gb``, as written in its help (``disk_cache.DEFAULT_MAX_BYTES``).
DEFAULT_CACHE_GB = 8


@dataclass
class EmbedSummary:
    """What an embedding run did."""

    files: int = 0
    slices: int = 0
    encoded: int = 0
    already_cached: int = 0
    seconds: float = 0.0
    failures: list[tuple[Path, str]] = field(default_factory=list)


def add_cache_arguments(parser: argparse.ArgumentParser, required: bool = False) -> None:
    """``--cache DIR`` and ``--cache-max-gb`` for a subcommand."""
    parser.add_argument(
        "--cache",
        required=required,
        default=None,
        metavar="DIR",
        help="folder of the embedding cache on disk (slices encoded once are reused)",
    )
    parser.add_argument(
        "--cache-max-gb",
        type=float,
        default=None,
        metavar="GB",
        help="largest size of the cache; least recently used slices are deleted beyond it "
        f"(default: {DEFAULT_CACHE_GB})",
    )
    parser.add_argument(
        "--cache-dtype",
        choices=("float32", "float16"),
        default="float32",
        help="how encoded slices are stored: float32 gives exactly the masks of a run without "
        "the cache; float16 takes half the space and may move a few mask pixels "
        "(default: float32)",
    )


def cache_max_bytes(args: argparse.Namespace) -> int:
    """``--cache-max-gb`` in bytes (the default budget without it); DiskCacheError below 0."""
    from napari_swinlitemedsam.inference.disk_cache import DEFAULT_MAX_BYTES, DiskCacheError

    if args.cache_max_gb is None:
        return DEFAULT_MAX_BYTES
    if not args.cache_max_gb >= 0:
        raise DiskCacheError("--cache-max-gb must be 0 or more")
    return int(args.cache_max_gb * (1 << 30))


def open_disk_cache(args: argparse.Namespace) -> DiskEmbeddingCache | None:
    """The cache named by ``--cache`` (None without it); DiskCacheError for a bad folder/size."""
    from napari_swinlitemedsam.inference.disk_cache import DiskEmbeddingCache

    if not getattr(args, "cache", None):
        return None
    return DiskEmbeddingCache(args.cache, max_bytes=cache_max_bytes(args), dtype=args.cache_dtype)


def model_planes(image: LoadedImage) -> list[np.ndarray]:
    """The 2D planes the model encodes for ``image`` (see :func:`cohort.cases.model_planes`)."""
    from napari_swinlitemedsam.cohort.cases import model_planes as planes_of

    return planes_of(image)


def embed_image(
    predictor: BoxPredictor, image: LoadedImage, on_slice: Callable[[int, int], None] | None = None
) -> tuple[int, int]:
    """Encode every plane of ``image`` that is not in the predictor's disk cache yet.

    ``on_slice(done, total)`` is called after each plane. Returns ``(encoded, already_cached)``.
    """
    from napari_swinlitemedsam.cohort.cases import embed_planes

    return embed_planes(predictor, model_planes(image), on_slice=on_slice)


def embed_inputs(
    predictor: BoxPredictor, inputs: Iterable[str | os.PathLike], show_progress: bool = True
) -> EmbedSummary:
    """Embed every slice of every input into ``predictor.disk_cache``, with progress bars.

    A file that cannot be read is recorded in ``failures`` and the others go on.
    """
    from tqdm import tqdm

    from napari_swinlitemedsam.annotation.series_listing import list_series_items
    from napari_swinlitemedsam.inference.predictor import PredictorError
    from napari_swinlitemedsam.io.image_files import ImageFileError, read_image

    started = time.perf_counter()
    summary = EmbedSummary()
    paths = list_series_items(inputs)
    several = show_progress and len(paths) > 1
    for path in tqdm(paths, desc="files", unit="file", disable=not several):
        try:
            image = read_image(path)
            with tqdm(desc=path.name, unit="slice", leave=False, disable=not show_progress) as bar:

                def advance(done: int, total: int) -> None:
                    bar.total = total
                    bar.update(done - bar.n)

                encoded, cached = embed_image(predictor, image, advance)
        except (ImageFileError, PredictorError, OSError) as error:
            summary.failures.append((path, str(error)))
            tqdm.write(f"{path.name}: FAILED: {error}")
            continue
        summary.files += 1
        summary.slices += encoded + cached
        summary.encoded += encoded
        summary.already_cached += cached
    summary.seconds = time.perf_counter() - started
    return summary


def run_embed(args: argparse.Namespace) -> int:
    """The ``embed`` subcommand: 0 on success, 1 when some files failed, 2 for bad arguments."""
    from napari_swinlitemedsam.annotation.series_listing import SeriesError, list_series_items
    from napari_swinlitemedsam.cli.main import load_predictor
    from napari_swinlitemedsam.inference.disk_cache import DiskCacheError
    from napari_swinlitemedsam.model.checkpoint import CheckpointError

    try:
        cache = open_disk_cache(args)
        paths = list_series_items(args.inputs)
    except (DiskCacheError, SeriesError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if getattr(args, "cluster", None):
        from napari_swinlitemedsam.cli.cohort import run_embed_on_cluster

        return run_embed_on_cluster(args, paths, cache)
    try:
        predictor = load_predictor(args)
    except (CheckpointError, ValueError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    predictor.disk_cache = cache
    summary = embed_inputs(predictor, paths)
    print(
        f"{summary.files} file(s), {summary.slices} slice(s): {summary.encoded} encoded, "
        f"{summary.already_cached} already cached, in {summary.seconds:.1f} s; "
        f"cache {cache.folder} holds {cache.nbytes / (1 << 20):.0f} MiB"
    )
    if summary.failures:
        print(f"{len(summary.failures)} file(s) failed:", file=sys.stderr)
        for path, message in summary.failures:
            print(f"  {path}: {message}", file=sys.stderr)
        return 1
    return 0


def add_embed_parser(commands) -> argparse.ArgumentParser:
    """Register ``embed`` on the subcommand ``commands`` of the main parser."""
    embed = commands.add_parser(
        "embed", help="encode images and stacks ahead of time into an embedding cache on disk"
    )
    embed.add_argument(
        "inputs", nargs="+", help="image files, challenge .npz cases, folders, glob patterns"
    )
    add_cache_arguments(embed, required=True)
    from napari_swinlitemedsam.cli.cohort import add_cluster_arguments

    add_cluster_arguments(embed, embed=True)
    return embed
