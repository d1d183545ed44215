"""``segment`` on zarr / OME-Zarr stacks: 3D boxes from a file, labels into a zarr store.

A stack bigger than memory is read one slice at a time
(:class:`~napari_swinlitemedsam.inference.volume_slices.VolumeSlices`) and its labels are
written one slice at a time into ``OUTDIR/<name>_masks.zarr`` (chunked one slice deep, uint16,
see :mod:`~napari_swinlitemedsam.io.label_stores`): no (D, H, W) array is ever made. Where boxes
overlap, the later box wins, as in the challenge ``.npz`` output.

The store is written under ``<name>_masks.zarr.partial`` and renamed when complete, so an
interrupted run never leaves a store that looks finished; ``--skip-done`` skips stacks whose
store is there.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from napari_swinlitemedsam.cohort.cases import (
    DONE,
    SKIPPED,
    CaseOutcome,
    failed_outcome,
    include_end_slices,
)
from napari_swinlitemedsam.cohort.recipe import SegmentSettings

PARTIAL = ".partial"


class BoxesFileError(ValueError):
    """The boxes file is missing or does not hold (N, 6) boxes."""


def read_boxes_file(path: str | Path) -> np.ndarray:
    """(N, 6) int64 ``[x_min, y_min, z_min, x_max, y_max, z_max]`` inclusive boxes from a
    ``.npy`` file or a CSV file (comma separated, one box a line, an optional header line)."""
    path = Path(path)
    if not path.is_file():
        raise BoxesFileError(f"{path}: no such boxes file")
    try:
        if path.suffix.lower() == ".npy":
            boxes = np.load(path, allow_pickle=False)
        else:
            lines = path.read_text().splitlines()
            header = 1 if lines and any(c.isalpha() for c in lines[0]) else 0
            boxes = np.loadtxt(path, delimiter=",", ndmin=2, skiprows=header)
    except ValueError as error:
        raise BoxesFileError(f"{path}: not a table of numbers ({error})") from None
    boxes = np.asarray(boxes)
    if boxes.ndim != 2 or boxes.shape[1] != 6:
        raise BoxesFileError(
            f"{path}: boxes must be (N, 6) x_min, y_min, z_min, x_max, y_max, z_max; "
            f"got shape {boxes.shape}"
        )
    return np.rint(boxes).astype(np.int64)


def labels_store_for(output_folder: Path, path: Path) -> Path:
    from napari_swinlitemedsam.io.label_stores import store_path

    return store_path(output_folder, path.name)


def write_object_slice(store, z: int, mask: np.ndarray, label: int) -> None:
    """Label ``mask`` (H, W) bool on slice ``z`` of ``store`` with ``label``, keeping higher
    labels already there (the later box wins, whatever order slices arrive in)."""
    if not mask.any():
        return
    plane = np.asarray(store[z])
    plane[mask] = np.maximum(plane[mask], label)
    store[z] = plane


def segment_store(
    predictor,
    path: Path,
    boxes: np.ndarray,
    output_folder: Path,
    settings: SegmentSettings,
    skip_done: bool = False,
    on_progress: Callable | None = None,
) -> CaseOutcome:
    """Segment the zarr stack ``path`` with (N, 6) ``boxes`` into its labels store in
    ``output_folder``. Never raises for a bad stack: the failure is the outcome's message."""
    from napari_swinlitemedsam.inference.volume import segment_volume
    from napari_swinlitemedsam.inference.volume_slices import VolumeSlices
    from napari_swinlitemedsam.io.label_stores import open_masks_store
    from napari_swinlitemedsam.io.zarr_stacks import ZarrStackError, open_zarr_stack

    started = time.perf_counter()
    target = labels_store_for(output_folder, path)
    if skip_done and target.is_dir():
        return CaseOutcome(path.name, SKIPPED, f"{target.name} is there")
    partial = target.with_name(target.name + PARTIAL)
    try:
        stack = open_zarr_stack(path)
        if len(stack.data.shape) != 3:
            raise ZarrStackError(f"{path}: segment needs a (D, H, W) stack with 3D boxes")
        slices = VolumeSlices(stack.data)
        if partial.exists():
            shutil.rmtree(partial)  # left by an interrupted run
        store = open_masks_store(partial, slices.shape)
        steps = segment_volume(
            predictor,
            slices,
            boxes,
            include_end_slices=include_end_slices(predictor, settings),
            stop_when_empty=settings.stop_when_empty,
            paste=False,
        )
        for result in steps:
            write_object_slice(store, result.z, result.mask, result.object_index + 1)
            if on_progress is not None:
                on_progress(result)
        if target.exists():
            shutil.rmtree(target)
        partial.rename(target)
    except Exception as error:  # noqa: BLE001 -- one bad stack never stops the others
        return failed_outcome(path, error, started)
    seconds = time.perf_counter() - started
    message = f"{len(boxes)} boxes, {seconds:.2f} s, {slices.reads} slice reads -> {target.name}"
    return CaseOutcome(path.name, DONE, message, seconds)
