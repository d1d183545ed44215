"""Read speed of NRRD and MetaImage volumes: SimpleITK (what the package uses) against pynrrd.

A CT-sized int16 volume (``--depth`` slices of 512 x 512, made from the bundled head CT by
repetition and upsampling, so the values are real HU) is written once as gzip NRRD, raw NRRD
and compressed MHA by SimpleITK; each file is then read ``--repeats`` times, the readers
interleaved. Printed: the median seconds of each reader and its ratio to SimpleITK's on the same
file. pynrrd reads only NRRD; it is measured there as the small alternative (see
docs/medical-formats.md for the install sizes).

    python benchmarks/bench_medical_io.py [--repeats 5] [--depth 120]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_swinlitemedsam.io.medical_volumes import read_medical_volume
from napari_swinlitemedsam.io.samples import load_sample


def ct_volume(depth: int) -> np.ndarray:
    """(depth, 512, 512) int16 HU from the head CT sample (slices repeated, 2x upsampled)."""
    ct = load_sample("head_ct").image
    slices = ct[np.arange(depth) % len(ct)]
    upsampled = slices.repeat(2, axis=1).repeat(2, axis=2)  # 240 -> 480
    return np.pad(upsampled, ((0, 0), (16, 16), (16, 16)), constant_values=-1024)


def timed(read, path: Path) -> float:
    started = time.perf_counter()
    read(path)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--depth", type=int, default=120)
    args = parser.parse_args()

    import nrrd
    import SimpleITK as sitk

    volume = ct_volume(args.depth)
    image = sitk.GetImageFromArray(volume)
    image.SetSpacing((0.5, 0.5, 1.5))
    readers = {
        "SimpleITK": lambda path: sitk.GetArrayFromImage(sitk.ReadImage(str(path))),
        "package (SimpleITK + display orientation)": read_medical_volume,
        "pynrrd": lambda path: nrrd.read(str(path)),
    }
    with tempfile.TemporaryDirectory() as folder:
        files = {
            "NRRD gzip": (Path(folder) / "ct.nrrd", True),
            "NRRD raw": (Path(folder) / "ct_raw.nrrd", False),
            "MHA compressed": (Path(folder) / "ct.mha", True),
        }
        for path, compress in files.values():
            sitk.WriteImage(image, str(path), compress)
        print(f"volume {volume.shape} int16, {volume.nbytes / 2**20:.0f} MiB in memory")
        for label, (path, _) in files.items():
            names = [n for n in readers if n != "pynrrd" or path.suffix == ".nrrd"]
            seconds = {name: [] for name in names}
            for _ in range(args.repeats):
                for name in names:
                    seconds[name].append(timed(readers[name], path))
            base = statistics.median(seconds["SimpleITK"])
            size = path.stat().st_size / 2**20
            for name in names:
                median = statistics.median(seconds[name])
                print(
                    f"{label:15s} {size:6.1f} MiB  {name:42s} {median:6.3f} s  "
                    f"x{median / base:.2f} of SimpleITK"
                )


if __name__ == "__main__":
    main()
