"""Build a training set and a held-out set, in the challenge format, from offline real images.

Sources (all obtainable without the network once the package is installed):

* ``nuclei2d``, ``nuclei3d``, ``brain_mr``: the real samples bundled with this package
  (:mod:`..samples`; provenance and licences in ``docs/samples.md``);
* ``coins``: ``skimage.data.coins()`` (bundled with scikit-image; Greek coins from Pompeii,
  Brooklyn Museum collection, no known copyright restrictions), with labels made by an algorithm
  (Sobel elevation map, watershed from intensity markers, hole filling, components of at least
  100 px): approximate, not expert.

Every source is cut in two along one axis with a gap between the parts, so that no pixel (and,
for stacks cut along z, no slice) of the held-out part is seen in training:

* 2D images and ``nuclei3d`` are cut along x: columns before 60 % of the width (minus half the
  gap) train, columns after it (plus half the gap) are held out; gap 16 px;
* ``brain_mr`` is cut along y (rows): the anterior half trains, the posterior half is held out
  (gap 16 px), so that both parts hold brain and lateral ventricles (a cut along z would put all
  ventricle slices on one side, and neighbouring slices are nearly identical).

Objects cut by the split keep their label on both sides. The output folder gets ``train/`` and
``heldout/`` with one ``.npz`` per part (``imgs``, ``gts``, and ``spacing`` for stacks) and a
``manifest.json`` recording each file's source, licence, label quality and crop.
Augmentation (flips) happens at training time (:mod:`.augment`), not here.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_swinlitemedsam.inference import intensity
from napari_swinlitemedsam.io.samples import load_sample

SPLIT_FRACTION = {"x": 0.6, "y": 0.5}
GAP = {"x": 16, "y": 16}
AVAILABLE_SOURCES = ("nuclei2d", "nuclei3d", "brain_mr", "coins")


@dataclass(frozen=True)
class SourceImage:
    """One source image with labels and what is known about it.

    Attributes:
        name: short name, used in file names.
        image: (H, W) / (H, W, 3) uint8 image or (D, H, W) uint8 stack.
        labels: integer map of the image's spatial shape (0 = background).
        spacing: per-axis spacing for stacks, else None.
        split_axis: ``"x"`` (last axis) or ``"y"`` (the rows axis).
        source: where the pixels come from.
        licence: their licence.
        labels_note: how the labels were made.
    """

    name: str
    image: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, ...] | None
    split_axis: str
    source: str
    licence: str
    labels_note: str


def _bundled(name: str, split_axis: str) -> SourceImage:
    sample = load_sample(name)
    if sample.image.ndim == 3:
        image = intensity.to_uint8(sample.image) if sample.image.dtype != np.uint8 else sample.image
        spacing = tuple(sample.spacing)
    else:
        image = intensity.to_rgb_uint8(sample.image)
        spacing = None
    return SourceImage(
        name,
        image,
        sample.labels,
        spacing,
        split_axis,
        f"bundled sample '{name}': {sample.source}",
        sample.licence,
        sample.info.labels_description,
    )


def coins_labels(image: np.ndarray, min_pixels: int = 100) -> np.ndarray:
    """Approximate instance labels of ``skimage.data.coins()`` (see the module docstring)."""
    from scipy import ndimage
    from skimage.filters import sobel
    from skimage.segmentation import watershed

    markers = np.zeros(image.shape, dtype=np.int32)
    markers[image < 30] = 1
    markers[image > 150] = 2
    foreground = watershed(sobel(image), markers) == 2
    foreground = ndimage.binary_fill_holes(foreground)
    labels, count = ndimage.label(foreground)
    sizes = ndimage.sum(foreground, labels, index=np.arange(1, count + 1))
    keep = np.zeros(count + 1, dtype=bool)
    keep[1:] = sizes >= min_pixels
    labels[~keep[labels]] = 0
    _, relabelled = np.unique(labels, return_inverse=True)
    return relabelled.reshape(labels.shape).astype(np.uint16)


def _coins() -> SourceImage:
    from skimage import data

    image = data.coins()
    return SourceImage(
        "coins",
        intensity.to_rgb_uint8(image),
        coins_labels(image),
        None,
        "x",
        "scikit-image bundled data skimage.data.coins() "
        "(Greek coins from Pompeii, Brooklyn Museum)",
        "no known copyright restrictions (Brooklyn Museum collection, as stated by scikit-image)",
        "algorithmic: Sobel + watershed from intensity markers + hole filling; approximate",
    )


def load_source(name: str) -> SourceImage:
    """The :class:`SourceImage` called ``name`` (one of :data:`AVAILABLE_SOURCES`)."""
    if name in ("nuclei2d", "nuclei3d"):
        return _bundled(name, "x")
    if name == "brain_mr":
        return _bundled(name, "y")
    if name == "coins":
        return _coins()
    raise ValueError(f"unknown source {name!r}; choose from {', '.join(AVAILABLE_SOURCES)}")


def split_ranges(length: int, axis: str) -> tuple[slice, slice]:
    """``(train, heldout)`` index ranges along an axis of ``length`` (see the module docstring)."""
    cut = round(length * SPLIT_FRACTION[axis])
    half_gap = GAP[axis] // 2
    return slice(0, max(1, cut - half_gap)), slice(min(length - 1, cut + half_gap), length)


def split_source(source: SourceImage) -> dict[str, tuple[np.ndarray, np.ndarray, str]]:
    """``{"train": (image, labels, crop), "heldout": (...)}`` for one source."""
    is_stack = source.spacing is not None
    spatial = source.labels.shape
    axis_index = len(spatial) - (1 if source.split_axis == "x" else 2)
    train, heldout = split_ranges(spatial[axis_index], source.split_axis)
    parts = {}
    for part, cut in (("train", train), ("heldout", heldout)):
        index = [slice(None)] * len(spatial)
        index[axis_index] = cut
        image = source.image[
            tuple(index) + ((slice(None),) if source.image.ndim > len(spatial) else ())
        ]
        labels = source.labels[tuple(index)]
        crop = f"{source.split_axis} in [{cut.start}, {cut.stop})"
        if not is_stack and image.ndim == 2:
            image = intensity.to_rgb_uint8(image)
        parts[part] = (np.ascontiguousarray(image), np.ascontiguousarray(labels), crop)
    return parts


def _write_npz(path: Path, imgs: np.ndarray, gts: np.ndarray, spacing) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.tmp-{os.getpid()}.npz")
    arrays = {"imgs": imgs, "gts": gts.astype(np.uint16)}
    if spacing is not None:
        arrays["spacing"] = np.asarray(spacing, dtype=np.float64)
    try:
        np.savez_compressed(temporary, **arrays)
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


def tiles(
    image: np.ndarray, labels: np.ndarray, size: int
) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """Non-overlapping ``size`` x ``size`` tiles of a 2D image (whole tiles only, row-major),
    each with its labels and a name suffix ``"_r{row}c{col}"``; tiles without labels are skipped."""
    height, width = labels.shape
    result = []
    for row in range(0, height - size + 1, size):
        for col in range(0, width - size + 1, size):
            tile_labels = labels[row : row + size, col : col + size]
            if tile_labels.any():
                result.append(
                    (image[row : row + size, col : col + size], tile_labels, f"_r{row}c{col}")
                )
    return result


def build_training_data(
    output: str | os.PathLike,
    sources: tuple[str, ...] = AVAILABLE_SOURCES,
    tile_size: int | None = None,
) -> dict:
    """Write ``output/train/*.npz``, ``output/heldout/*.npz`` and ``output/manifest.json``.

    With ``tile_size``, the 2D parts are also cut into tiles in ``output/train_tiles/`` and
    ``output/heldout_tiles/`` (for the fine-tuning experiment: learn on a few training tiles,
    score on the held-out tiles). Returns the manifest (also written as JSON).
    """
    output = Path(output)
    entries = []
    for name in sources:
        source = load_source(name)
        for part, (image, labels, crop) in split_source(source).items():
            path = output / part / f"{name}_{part}.npz"
            _write_npz(path, image, labels, source.spacing)
            objects = int(len(np.unique(labels)) - (1 if (labels == 0).any() else 0))
            entries.append(
                {
                    "file": str(path.relative_to(output)),
                    "split": part,
                    "source_name": name,
                    "shape": list(image.shape),
                    "objects": objects,
                    "crop": crop,
                    "source": source.source,
                    "licence": source.licence,
                    "labels": source.labels_note,
                }
            )
            if tile_size and source.spacing is None:
                for tile_image, tile_labels, suffix in tiles(image, labels, tile_size):
                    tile_path = output / f"{part}_tiles" / f"{name}{suffix}.npz"
                    _write_npz(tile_path, tile_image, tile_labels, None)
                    entries.append(
                        {
                            "file": str(tile_path.relative_to(output)),
                            "split": f"{part}_tiles",
                            "source_name": name,
                            "shape": list(tile_image.shape),
                            "crop": f"{crop}, tile {suffix[1:]} of {tile_size} px",
                        }
                    )
    manifest = {
        "format": "challenge training npz: imgs (H, W, 3) uint8 or (D, H, W) uint8, gts labels",
        "split_rule": {"fraction": SPLIT_FRACTION, "gap": GAP},
        "files": entries,
    }
    output.mkdir(parents=True, exist_ok=True)
    (output / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest
