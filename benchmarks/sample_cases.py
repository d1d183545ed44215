"""Write the bundled real samples as challenge cases with ground-truth boxes.

Usage: python benchmarks/sample_cases.py OUTDIR

Creates OUTDIR/imgs/<case>.npz (imgs, boxes, spacing) and OUTDIR/gts/<case>.npz (gts,
spacing). Boxes are the tight, inclusive boxes of the ground-truth objects, as in the challenge's
validation cases. 3D cases get the ``3D_`` prefix, 2D cases ``2D_``. Then:

    swinlitemedsam segment OUTDIR/imgs -o OUTDIR/segs --model litemedsam
    swinlitemedsam evaluate OUTDIR/segs OUTDIR/gts --csv OUTDIR/scores.csv
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from napari_swinlitemedsam.inference.intensity import to_uint8
from napari_swinlitemedsam.io.samples import SAMPLE_NAMES, load_sample


def tight_boxes(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inclusive boxes of every object (2D xyxy or 3D xyzxyz) and labels renumbered 1..N."""
    ids = [i for i in np.unique(labels) if i != 0]
    renumbered = np.zeros(labels.shape, dtype=np.uint8 if len(ids) < 256 else np.uint16)
    boxes = []
    for k, label in enumerate(ids, start=1):
        where = np.nonzero(labels == label)
        renumbered[labels == label] = k
        if labels.ndim == 2:
            ys, xs = where
            boxes.append([xs.min(), ys.min(), xs.max(), ys.max()])
        else:
            zs, ys, xs = where
            boxes.append([xs.min(), ys.min(), zs.min(), xs.max(), ys.max(), zs.max()])
    return np.asarray(boxes, dtype=np.int64), renumbered


def main(outdir: str) -> None:
    root = Path(outdir)
    (root / "imgs").mkdir(parents=True, exist_ok=True)
    (root / "gts").mkdir(parents=True, exist_ok=True)
    for name in SAMPLE_NAMES:
        sample = load_sample(name)
        boxes, gts = tight_boxes(sample.labels)
        is_3d = sample.labels.ndim == 3
        image = to_uint8(sample.image)
        if not is_3d and image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        case = ("3D_" if is_3d else "2D_") + name
        spacing = np.asarray(sample.spacing, dtype=np.float64)
        np.savez_compressed(root / "imgs" / f"{case}.npz", imgs=image, boxes=boxes, spacing=spacing)
        np.savez_compressed(root / "gts" / f"{case}.npz", gts=gts, spacing=spacing)
        print(f"{case}: image {image.shape} {image.dtype}, {len(boxes)} boxes")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
