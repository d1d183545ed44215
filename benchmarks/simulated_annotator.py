"""Reference 3D schedule vs our default (and candidate rules), measured by a simulated annotator.

For every object of ``propagation_cases`` (tuning or report part) and every schedule:

* **3D box**: the challenge's input, the object's tight 3D box, through ``segment_volume``;
  DSC and NSD (tolerance 2 in the volume's spacing units) after that one box;
  with ``--max-boxes 0`` only this, all objects of a volume in one batched run per schedule;
* **annotator**: ``evaluation.simulated_annotator.simulate_object``: a box on the largest
  slice, then a box on the worst slice until DSC >= 0.90 or 10 boxes; DSC after the first
  box, boxes needed, decoder calls and seconds.

Every slice is encoded once per run (in memory, and on disk with ``--cache``, so a second run
encodes nothing); a decode with the same slice and box as before is answered from memory too,
so re-propagating after a new key slice costs only the slices whose box changed. Seconds are
therefore the decoder's share of an annotation session on this machine; ``decodes`` counts
every decode the plugin would run.

    python benchmarks/simulated_annotator.py --split report --cache out/propagation_cache
    python benchmarks/simulated_annotator.py --split all --max-boxes 0 --share-decodes \
        --variants reference margin5c margin10c --cache out/propagation_cache
    python benchmarks/simulated_annotator.py --split tune --max-boxes 1 --share-decodes \
        --variants reference boxed margin10 score
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from flip_averaging import FlipAveragedPredictor  # noqa: E402
from napari_swinlitemedsam.evaluation.metrics import dice, normalized_surface_dice  # noqa: E402
from napari_swinlitemedsam.evaluation.simulated_annotator import simulate_object  # noqa: E402
from napari_swinlitemedsam.inference.disk_cache import DiskEmbeddingCache  # noqa: E402
from napari_swinlitemedsam.inference.generators import run_to_end  # noqa: E402
from napari_swinlitemedsam.inference.predictor import BoxPredictor  # noqa: E402
from napari_swinlitemedsam.inference.volume import (  # noqa: E402
    DEFAULT_RULES,
    KEY_SLICE_RULES,
    REFERENCE_RULES,
    segment_volume,
)
from propagation_cases import load_volumes, objects  # noqa: E402

#: "boxed" (3D box bounds the propagation, stop once empty) is what the other candidates build
#: on; the rows of docs/pipeline.md name these variants.
BOXED = REFERENCE_RULES.with_options(clamp_to_box=True, stop_when_empty=True)
#: name -> rules, or (rules with a 3D box, rules from key slices)
VARIANTS = {
    "reference": REFERENCE_RULES,
    "default": (DEFAULT_RULES, KEY_SLICE_RULES),
    "boxed": BOXED,
    "margin10": BOXED.with_options(margin_fraction=0.10),
    "margin5": BOXED.with_options(margin_fraction=0.05),
    "connected": BOXED.with_options(keep_connected=True),
    "holes": BOXED.with_options(fill_holes=True),
    "area": BOXED.with_options(min_area_ratio=0.3),
    "score": BOXED.with_options(min_score=0.5),
    "margin5c": BOXED.with_options(margin_fraction=0.05, keep_connected=True),
    "margin10c": BOXED.with_options(margin_fraction=0.10, keep_connected=True),
    "margin10a": BOXED.with_options(margin_fraction=0.10, min_area_ratio=0.3),
    "flip": REFERENCE_RULES,
    # key slices: each gap filled from both of its key slices, per slice the higher IoU estimate
    "bothends": (DEFAULT_RULES, KEY_SLICE_RULES.with_options(fill_gaps_from_both_ends=True)),
    # the key-slice default before gaps were filled from both ends (each half from its end)
    "halves": (DEFAULT_RULES, KEY_SLICE_RULES.with_options(fill_gaps_from_both_ends=False)),
    # key slices: end where the mask stands out from its surroundings less than this fraction
    # of what the object did on its key slice (a fading object, e.g. out of focus); 0.35 is
    # the default, "nocontrast" the schedule before
    "nocontrast": (DEFAULT_RULES, KEY_SLICE_RULES.with_options(min_contrast_ratio=0.0)),
    "contrast15": (DEFAULT_RULES, KEY_SLICE_RULES.with_options(min_contrast_ratio=0.15)),
    "contrast25": (DEFAULT_RULES, KEY_SLICE_RULES.with_options(min_contrast_ratio=0.25)),
    "contrast35": (DEFAULT_RULES, KEY_SLICE_RULES.with_options(min_contrast_ratio=0.35)),
}
#: variants decoded with flip test-time augmentation (their rules as in VARIANTS)
FLIPPED = {"flip"}


class MemoisedDecodes:
    """A predictor that answers a repeated (slice, boxes) decode from memory and counts calls."""

    def __init__(self, predictor: BoxPredictor) -> None:
        self.predictor = predictor
        self.memo: dict = {}
        self.calls = 0
        self.decodes = 0

    def encode(self, image, key=None):
        return self.predictor.encode(image, key=key)

    def predict_256(self, boxes_256, encoded, slice_index=0):
        self.calls += 1
        key = (id(encoded), slice_index, np.asarray(boxes_256, dtype=np.float64).tobytes())
        if key not in self.memo:
            self.decodes += 1
            # keep `encoded` alive so its id is never reused by another slice
            self.memo[key] = (self.predictor.predict_256(boxes_256, encoded, slice_index), encoded)
        return self.memo[key][0]


def box_3d(truth: np.ndarray) -> np.ndarray:
    """(1, 6) inclusive ``[x0, y0, z0, x1, y1, z1]`` of a (D, H, W) mask."""
    zs, ys, xs = np.nonzero(truth)
    return np.array([[xs.min(), ys.min(), zs.min(), xs.max(), ys.max(), zs.max()]])


def measure(memo: MemoisedDecodes, volume, item, rules, target, max_boxes) -> dict:
    """3D-box and (unless ``max_boxes`` is 0) simulated-annotator figures of one object."""
    key = ("volume", item.volume_name)
    rules_3d, rules_key = rules if isinstance(rules, tuple) else (rules, rules)
    calls_before = memo.calls
    one_box = run_to_end(
        segment_volume(memo, volume, box_3d(item.truth), volume_key=key, rules=rules_3d)
    )
    row = {
        "box3d_dsc": dice(one_box, item.truth),
        "box3d_nsd": normalized_surface_dice(one_box > 0, item.truth, item.spacing),
        "box3d_decodes": memo.calls - calls_before,
        "first_dsc": float("nan"),
        "boxes": None,
        "final_dsc": float("nan"),
        "decodes": 0,
    }
    if max_boxes == 0:
        return row
    calls_before = memo.calls
    result = simulate_object(memo, volume, item.truth, rules_key, target, max_boxes, volume_key=key)
    row.update(
        first_dsc=result.first_dsc,
        boxes=result.boxes_to_target,
        final_dsc=result.dsc_per_box[-1],
        decodes=memo.calls - calls_before,
    )
    return row


def measure_3d_together(memo: MemoisedDecodes, volume, items, rules) -> list[dict]:
    """3D-box figures of several objects of one volume, propagated in one run.

    All objects active on a slice are decoded in one batch (as ``segment_volume`` does for a
    multi-object case), which costs far less than one run per object; each object's masks are
    taken from the run's per-object results, so overlaps between objects do not matter.
    """
    rules_3d = rules[0] if isinstance(rules, tuple) else rules
    boxes = np.concatenate([box_3d(item.truth) for item in items])
    found = [np.zeros(item.truth.shape, dtype=bool) for item in items]
    calls_before = memo.calls
    run = segment_volume(
        memo, volume, boxes, volume_key=("volume", items[0].volume_name), rules=rules_3d
    )
    for result in run:
        found[result.object_index][result.z] = result.mask
    decodes = (memo.calls - calls_before) / len(items)
    return [
        {
            "box3d_dsc": dice(mask, item.truth),
            "box3d_nsd": normalized_surface_dice(mask, item.truth, item.spacing),
            "box3d_decodes": decodes,
            "first_dsc": float("nan"),
            "boxes": None,
            "final_dsc": float("nan"),
            "decodes": 0,
        }
        for mask, item in zip(found, items)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=("tune", "report", "all"), default="report")
    parser.add_argument("--variants", nargs="+", default=["reference", "default"])
    parser.add_argument("--cache", default=None, help="embedding cache folder on disk")
    parser.add_argument("--model", default="litemedsam")
    parser.add_argument("--target", type=float, default=0.90)
    parser.add_argument(
        "--max-boxes", type=int, default=10, help="annotator's boxes (0: the 3D box alone)"
    )
    parser.add_argument("--only", nargs="*", default=None, help="object names to run")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--share-decodes",
        action="store_true",
        help="one decode memo for all schedules (faster tuning; seconds then mean nothing)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    predictor = BoxPredictor.from_pretrained(args.model, device="cpu", cache_bytes=2 << 30)
    if args.cache:
        predictor.disk_cache = DiskEmbeddingCache(args.cache)
    volumes = load_volumes()
    items = [o for o in objects(args.split) if args.only is None or o.name in args.only]
    rows = {name: [] for name in args.variants}
    print(
        f"{len(items)} objects ({args.split}), model {args.model}, "
        f"{torch.get_num_threads()} threads"
    )
    print(
        "| object | schedule | 3D box DSC | 3D box NSD | 3D decodes | 1st box DSC "
        "| boxes to 0.90 | DSC at end | decodes | s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    flipped = FlipAveragedPredictor(predictor)
    shared = {False: MemoisedDecodes(predictor), True: MemoisedDecodes(flipped)}
    if args.max_boxes == 0:
        # 3D boxes only: the objects of one volume go through one batched run per schedule
        for volume_name in dict.fromkeys(item.volume_name for item in items):
            group = [item for item in items if item.volume_name == volume_name]
            for name in args.variants:
                flip = name in FLIPPED
                memo = (
                    shared[flip]
                    if args.share_decodes
                    else MemoisedDecodes(flipped if flip else predictor)
                )
                started = time.perf_counter()
                found = measure_3d_together(memo, volumes[volume_name], group, VARIANTS[name])
                seconds = (time.perf_counter() - started) / len(group)
                for item, row in zip(group, found):
                    row["seconds"] = seconds
                    rows[name].append(row)
                    print(
                        f"| {item.name} | {name} | {row['box3d_dsc']:.3f} | "
                        f"{row['box3d_nsd']:.3f} | {row['box3d_decodes']:.0f} | | | | | "
                        f"{seconds:.1f} |",
                        flush=True,
                    )
        items = []
    for item in items:
        for name in args.variants:
            # by default no memo is shared across schedules, so seconds compare
            flip = name in FLIPPED
            memo = (
                shared[flip]
                if args.share_decodes
                else MemoisedDecodes(flipped if flip else predictor)
            )
            started = time.perf_counter()
            row = measure(
                memo, volumes[item.volume_name], item, VARIANTS[name], args.target, args.max_boxes
            )
            row["seconds"] = time.perf_counter() - started
            rows[name].append(row)
            boxes = row["boxes"] if row["boxes"] is not None else f">{args.max_boxes}"
            print(
                f"| {item.name} | {name} | {row['box3d_dsc']:.3f} | {row['box3d_nsd']:.3f} | "
                f"{row['box3d_decodes']} | {row['first_dsc']:.3f} | {boxes} | "
                f"{row['final_dsc']:.3f} | {row['decodes']} | "
                f"{row['seconds']:.1f} |",
                flush=True,
            )
    print("\nmean over objects (boxes to 0.90: a miss counts as max-boxes + 1)")
    for name, values in rows.items():
        if not values:
            continue
        boxes = [v["boxes"] if v["boxes"] is not None else args.max_boxes + 1 for v in values]
        reached = sum(v["boxes"] is not None for v in values)
        print(
            f"| mean | {name} | {np.mean([v['box3d_dsc'] for v in values]):.3f} | "
            f"{np.mean([v['box3d_nsd'] for v in values]):.3f} | "
            f"{np.mean([v['box3d_decodes'] for v in values]):.0f} | "
            f"{np.mean([v['first_dsc'] for v in values]):.3f} | {np.mean(boxes):.2f} "
            f"({reached}/{len(values)} reached) | "
            f"{np.mean([v['final_dsc'] for v in values]):.3f} | "
            f"{np.mean([v['decodes'] for v in values]):.0f} | "
            f"{np.mean([v['seconds'] for v in values]):.1f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
