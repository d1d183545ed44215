"""Time to the first mask on a stack of an image series, with a cold and a warm disk cache.

What the annotator does when the user moves to a stack of a series and draws a first box on the
slice shown: read the file, map the whole stack to uint8 once, encode the shown (middle) slice
(or read it from the embedding cache on disk), decode the box. Measured with the real bundled
LiteMedSAM weights on the bundled ``nuclei3d`` stack (60 x 256 x 256) stored as a float32 TIFF,
and on a larger float32 stack (``--depth`` slices of 512 x 512, made from it by repetition and
upsampling), each time with a fresh predictor (empty in-memory cache):

* cold: an empty cache folder: the slice is encoded (and stored);
* warm: the folder filled by the cold run: the slice's features are read from disk;
* prefetched: the slice was encoded ahead in this process (what the series' background prefetch
  gives): only the decoder runs after the read.

Cold and warm runs are interleaved; medians of ``--repeats`` runs are printed with the ratio.

    python benchmarks/bench_series.py [--repeats 3] [--depth 120] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import torch

from napari_swinlitemedsam.annotation.slice_work import read_and_prepare
from napari_swinlitemedsam.inference.disk_cache import DiskEmbeddingCache
from napari_swinlitemedsam.inference.embedding_cache import EmbeddingCache
from napari_swinlitemedsam.inference.predictor import BoxPredictor
from napari_swinlitemedsam.io.samples import load_sample


def first_mask(predictor: BoxPredictor, path: Path, box: np.ndarray, key) -> dict[str, float]:
    """Seconds of each step from the file to the first mask of ``box`` on the middle slice."""
    started = time.perf_counter()
    _, prepared = read_and_prepare(path)
    read_s = time.perf_counter() - started
    z = prepared.shape[0] // 2
    encoded = predictor.encode(prepared[z], key=(key, z))
    encode_s = time.perf_counter() - started - read_s
    predictor.set_encoded(encoded)
    mask = predictor.predict(box[None], slice_index=z).masks[0]
    total = time.perf_counter() - started
    if not mask.any():
        raise RuntimeError("the benchmark box gave an empty mask")
    return {
        "read+map": read_s,
        "encode": encode_s,
        "decode": total - read_s - encode_s,
        "total": total,
    }


def stacks(folder: Path, depth: int) -> list[tuple[str, Path, np.ndarray]]:
    """``(description, TIFF path, (4,) xyxy box on the middle slice)`` of the measured stacks."""
    sample = load_sample("nuclei3d")
    image = sample.image.astype(np.float32) * 3.7 + 12.0  # float, so the mapping does work
    middle = sample.labels[sample.labels.shape[0] // 2]
    label = np.bincount(middle[middle > 0]).argmax()
    rows, cols = np.nonzero(middle == label)
    box = np.array([cols.min(), rows.min(), cols.max(), rows.max()])
    small = folder / "nuclei3d_float.tif"
    tifffile.imwrite(small, image)
    repeats = -(-depth // image.shape[0])
    large = np.tile(image, (repeats, 1, 1))[:depth].repeat(2, axis=1).repeat(2, axis=2)
    large_path = folder / "large_float.tif"
    tifffile.imwrite(large_path, large)
    return [
        (f"nuclei3d {image.shape} float32", small, box),
        (f"stack {large.shape} float32", large_path, box * 2),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--depth", type=int, default=120, help="slices of the larger stack")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    predictor = BoxPredictor.from_pretrained("litemedsam", device="cpu")
    print(f"LiteMedSAM on {predictor.device}, {torch.get_num_threads()} torch threads")
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        for description, path, box in stacks(folder, args.depth):
            runs: dict[str, list[dict[str, float]]] = {"cold": [], "warm": [], "prefetched": []}
            for repeat in range(args.repeats):
                cache = DiskEmbeddingCache(folder / f"cache{repeat}")
                for kind in ("cold", "warm"):
                    predictor.cache = EmbeddingCache()
                    predictor.disk_cache = cache
                    runs[kind].append(first_mask(predictor, path, box, ("bench", kind, repeat)))
                # Prefetched: the same key already in the in-memory cache.
                runs["prefetched"].append(
                    first_mask(predictor, path, box, ("bench", "warm", repeat))
                )
            print(f"\n{description}: time to the first mask (median of {args.repeats})")
            medians = {}
            for kind, samples in runs.items():
                medians[kind] = {
                    step: statistics.median(s[step] for s in samples) for step in samples[0]
                }
                steps = ", ".join(
                    f"{step} {seconds:.3f} s"
                    for step, seconds in medians[kind].items()
                    if step != "total"
                )
                print(f"  {kind:10s} {medians[kind]['total']:.3f} s  ({steps})")
            print(
                f"  cold / warm: {medians['cold']['total'] / medians['warm']['total']:.2f}x; "
                f"encode step cold / warm: {medians['cold']['encode'] / medians['warm']['encode']:.1f}x"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
