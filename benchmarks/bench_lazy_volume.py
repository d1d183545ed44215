"""A stack bigger than memory, annotated slice by slice: time to the first mask and peak RSS.

The benchmark builds its own volume: a compressed zarr store of ``--depth`` x ``--size`` x
``--size`` uint16 (default 2000 x 2048 x 2048: 16 GB if it were read whole), chunks of one
512 x 512 tile of one slice. Slices ``0..--written-1`` hold a smooth texture with bright blobs
(so masks are real); the slices above are never written and read as the store's fill value (0),
which keeps building the store to a minute while the array stays 16 GB to every reader.

Each measurement runs in a fresh Python process (peak RSS = that process's maximum resident
size, ``ru_maxrss``), with the bundled LiteMedSAM weights:

* ``lazy``: open the store with dask (as napari-ome-zarr / ``da.from_zarr`` give it), wrap it in
  :class:`VolumeSlices` (intensity mapping from a 16-slice sample), encode the slice the box is
  on, decode the box: the time from opening to the first mask; then one object propagated
  through 100 slices (time, peak RSS);
* ``store``: as ``lazy``, but the propagated slices are written as the annotator writes them:
  into a napari Labels layer over a zarr masks store on disk (``io.label_stores``), through
  ``Labels.data_setitem`` inside one undo group, so peak RSS includes napari and the undo
  history;
* ``eager`` (the behaviour before lazy stacks), only on a ``--eager-depth`` store small enough to
  fit: the whole stack read and mapped to uint8 first (``to_uint8(np.asarray(data))``), then the
  same first mask; and ``lazy`` on that same small store, for the ratio.

    python benchmarks/bench_lazy_volume.py [--store DIR] [--depth 2000] [--size 2048]
        [--written 300] [--eager-depth 200] [--rows lazy,store,eager]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TILE = 512


def build_store(path: Path, depth: int, size: int, written: int) -> None:
    """Write the benchmark's zarr store (see the module docstring) unless it exists."""
    import zarr

    if (path / ".zarray").exists() or (path / "zarr.json").exists():
        return
    array = zarr.open_array(
        str(path),
        mode="w",
        shape=(depth, size, size),
        chunks=(1, TILE, TILE),
        dtype="uint16",
        fill_value=0,
        zarr_format=2,
    )
    rng = np.random.default_rng(0)
    coarse = rng.normal(0.0, 1.0, (written + 8, size // 64, size // 64))
    yy, xx = np.mgrid[:size, :size]
    centres = rng.uniform(0.2 * size, 0.8 * size, (6, 2))
    for z in range(written):
        texture = np.kron(coarse[z : z + 8].mean(axis=0), np.ones((64, 64)))
        plane = 600.0 + 120.0 * texture + rng.normal(0.0, 30.0, (size, size))
        for index, (cy, cx) in enumerate(centres):
            radius = size * (0.05 + 0.01 * index) * (1.0 - abs(z - written / 2) / written)
            plane[(yy - cy) ** 2 + (xx - cx) ** 2 < radius**2] += 2500.0
        array[z] = np.clip(plane, 1, 65535).astype(np.uint16)


def box_on(size: int, written: int) -> tuple[int, np.ndarray]:
    """Slice and (4,) xyxy box around the first blob, as a user would draw it."""
    rng = np.random.default_rng(0)
    rng.normal(0.0, 1.0, (written + 8, size // 64, size // 64))
    cy, cx = rng.uniform(0.2 * size, 0.8 * size, (6, 2))[0]
    z = written // 2
    radius = size * 0.05 + 8
    return z, np.array([cx - radius, cy - radius, cx + radius, cy + radius]).round()


def measure(mode: str, store: Path, written: int, propagate: int) -> dict:
    """One measurement in this process (run through a child process by ``main``)."""
    import dask.array as da

    from napari_swinlitemedsam.inference.generators import run_to_end
    from napari_swinlitemedsam.inference.intensity import to_uint8
    from napari_swinlitemedsam.inference.predictor import BoxPredictor
    from napari_swinlitemedsam.inference.volume import propagate_from_key_slices
    from napari_swinlitemedsam.inference.volume_slices import VolumeSlices

    predictor = BoxPredictor.from_pretrained("litemedsam")
    started = time.perf_counter()
    data = da.from_zarr(str(store))
    size = data.shape[-1]
    z, box = box_on(size, written)
    volume = to_uint8(np.asarray(data)) if mode == "eager" else VolumeSlices(data)
    labels = masks_layer(store, data.shape) if mode == "store" else None
    encoded = predictor.encode(volume[z], key=("bench", z))
    predictor.set_encoded(encoded)
    mask = predictor.predict(box[None], slice_index=z).masks[0]
    first_mask_s = time.perf_counter() - started
    result = {
        "mode": mode,
        "shape": list(data.shape),
        "first_mask_s": first_mask_s,
        "mask_pixels": int(mask.sum()),
        "rss_first_mask_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if propagate:
        started = time.perf_counter()
        half = propagate // 2
        steps = propagate_from_key_slices(
            predictor, volume, {z: box}, z_range=(z - half, z + half - 1), volume_key="bench"
        )
        if labels is None:
            masks = run_to_end(steps)
        else:
            masks = write_into_layer(labels, steps)
            result["store_slices_with_mask"] = int(
                sum(bool(np.any(labels.data[k])) for k in range(z - half, z + half))
            )
        result["propagate_slices"] = len(masks)
        result["propagate_s"] = time.perf_counter() - started
        result["rss_peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def masks_layer(store: Path, shape: tuple[int, ...]):
    """A napari Labels layer over a fresh zarr masks store beside the benchmark's store."""
    import shutil

    from napari.layers import Labels

    from napari_swinlitemedsam.io.label_stores import open_masks_store

    path = store.with_name(store.stem + "_masks.zarr")
    if path.exists():
        shutil.rmtree(path)
    return Labels(open_masks_store(path, tuple(int(n) for n in shape)))


def write_into_layer(labels, steps) -> dict:
    """Write each propagated slice as the annotator does (one undo group); the masks dict."""
    from napari_swinlitemedsam._napari.layer_io import write_object_mask

    with labels.block_history():
        while True:
            try:
                result = next(steps)
            except StopIteration as finished:
                return finished.value
            write_object_mask(labels, 1, result.mask, result.z, overwrite=False)


def run_child(mode: str, store: Path, written: int, propagate: int) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        mode,
        "--store",
        str(store),
        "--written",
        str(written),
        "--propagate",
        str(propagate),
    ]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=None, help="folder for the zarr stores")
    parser.add_argument("--depth", type=int, default=2000)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--written", type=int, default=300)
    parser.add_argument("--eager-depth", type=int, default=200)
    parser.add_argument("--propagate", type=int, default=100)
    parser.add_argument(
        "--rows", default="lazy,store,eager", help="measurements to run (comma separated)"
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.store, args.written, args.propagate)))
        return
    folder = args.store or Path(tempfile.mkdtemp(prefix="lazy-bench-"))
    big, small = folder / "big.zarr", folder / "small.zarr"
    chosen = set(args.rows.split(","))
    started = time.perf_counter()
    build_store(big, args.depth, args.size, args.written)
    written_small = min(args.written, args.eager_depth)
    if "eager" in chosen:
        build_store(small, args.eager_depth, args.size, written_small)
    print(f"stores ready in {time.perf_counter() - started:.0f} s under {folder}")
    for mode in ("lazy", "store"):
        if mode in chosen:
            print(json.dumps(run_child(mode, big, args.written, args.propagate)), flush=True)
    if "eager" not in chosen:
        return
    rows = [run_child("eager", small, written_small, 0), run_child("lazy", small, written_small, 0)]
    for row in rows:
        print(json.dumps(row))
    eager, lazy_small = rows
    print(
        f"{eager['shape']}: first mask eager {eager['first_mask_s']:.1f} s / lazy "
        f"{lazy_small['first_mask_s']:.1f} s = {eager['first_mask_s'] / lazy_small['first_mask_s']:.1f}x; "
        f"peak RSS eager {eager['rss_first_mask_mib']:.0f} MiB / lazy "
        f"{lazy_small['rss_first_mask_mib']:.0f} MiB"
    )


if __name__ == "__main__":
    main()
