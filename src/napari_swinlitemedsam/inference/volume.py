"""3D segmentation: propagate 2D box prompts through a (D, H, W) stack.

The method is the challenge's: start at an object's middle slice with its box, then go up and
down one slice at a time, each time using the box of the previous slice's mask enlarged by 3
pixels (in the 256 frame), and fall back to the middle box when the previous mask is empty.

Differences from the reference scripts, all deliberate:

* every slice is encoded once per volume, whatever the number of objects (the reference
  re-encodes each slice for each object): objects advance together in one upward and one
  downward sweep, and all objects active on a slice are decoded in one batch;
* encoding runs ahead of decoding: the next slice of the sweep (the first slices of the
  downward sweep after the upward one) is encoded in a background thread while the current
  slice decodes (:mod:`.encode_ahead`; not on a CPU with two cores, where the threads only
  compete, :mod:`.cores`); a graph runtime encodes two slices side by side;
* ``include_end_slices=True`` (default) segments ``z_min`` and ``z_max`` themselves, as the
  organisers' fixed LiteMedSAM baseline does; ``False`` reproduces the Swin-LiteMedSAM reference,
  which stops one slice short at both ends;
* the per-slice rules (next box, mask clean-up, when to stop) are a
  :class:`~.propagation_rules.PropagationRules`: ``rules=REFERENCE_RULES`` is the reference
  schedule exactly and stays the default for 3D boxes (``DEFAULT_RULES``); key slices default
  to :data:`~.propagation_rules.KEY_SLICE_RULES`, measured to do better on real volumes
  (``docs/pipeline.md``);
* :func:`propagate_from_key_slices` lets several boxes on different slices guide one object.

Long work is a generator: it yields :class:`SliceResult` after every decoded slice (so a GUI
can show masks as they arrive, and stop early) and returns the label volume.
"""

from __future__ import annotations

from collections.abc import Generator, Hashable
from dataclasses import dataclass

import numpy as np

from napari_swinlitemedsam.inference import transforms
from napari_swinlitemedsam.inference.cores import lookahead_for, usable_cores
from napari_swinlitemedsam.inference.encode_ahead import EncodeAhead
from napari_swinlitemedsam.inference.predictor import BoxPredictor, PredictorError
from napari_swinlitemedsam.inference.propagation_rules import (
    DEFAULT_RULES,
    KEY_SLICE_RULES,
    REFERENCE_RULES,
    PropagationRules,
    contrast_ratio,
    mask_contrast,
)
from napari_swinlitemedsam.inference.volume_slices import VolumeSlices

__all__ = [
    "DEFAULT_RULES",
    "KEY_SLICE_RULES",
    "REFERENCE_RULES",
    "PropagationRules",
    "SliceResult",
    "propagate_from_key_slices",
    "segment_volume",
]


@dataclass(frozen=True)
class SliceResult:
    """One object segmented on one slice.

    Attributes:
        object_index: 0-based index of the object (its label is object_index + 1).
        z: slice index.
        mask: (H, W) bool mask of the object on that slice.
        done: slices decoded so far, over all objects.
        total: slices to decode in all (an upper bound when ``stop_when_empty``).
        encoded_slices: distinct slices encoded so far.
        box_256: (4,) the box the decoder got, in the 256 frame.
    """

    object_index: int
    z: int
    mask: np.ndarray
    done: int
    total: int
    encoded_slices: int
    box_256: np.ndarray


@dataclass
class _Track:
    """Propagation state of one object in one direction."""

    index: int
    start: int
    stop: int  # inclusive
    step: int
    mid_box: np.ndarray  # (4,) original pixels, inclusive
    is_3d_box: bool = True  # mid_box's x/y extent bounds the object on every slice
    previous: np.ndarray | None = None  # (H, W) bool mask of the previous slice
    ended: bool = False

    def covers(self, z: int) -> bool:
        low, high = sorted((self.start, self.stop))
        return low <= z <= high and not self.ended


def check_boxes_3d(boxes: np.ndarray, depth: int) -> np.ndarray:
    """Validate (N, 6) ``[x_min, y_min, z_min, x_max, y_max, z_max]`` boxes; returns int64.

    Swapped z bounds are put in order and z is cut to the stack; NaN boxes and boxes wholly
    outside the stack raise :class:`PredictorError`.
    """
    array = np.asarray(boxes, dtype=np.float64)
    if array.ndim == 1 and array.size == 6:
        array = array[None]
    if array.ndim != 2 or array.shape[1] != 6:
        raise PredictorError(
            f"3D boxes must be (N, 6) [x_min, y_min, z_min, x_max, y_max, z_max], got {array.shape}"
        )
    if not np.isfinite(array).all():
        raise PredictorError("3D boxes have NaN or infinite coordinates")
    array = array.astype(np.int64)
    z_min, z_max = np.minimum(array[:, 2], array[:, 5]), np.maximum(array[:, 2], array[:, 5])
    outside = (z_max < 0) | (z_min > depth - 1)
    if outside.any():
        raise PredictorError(
            f"3D boxes {np.flatnonzero(outside).tolist()} lie outside the stack's {depth} slices"
        )
    # A box reaching beyond the stack is cut to it (the middle slice is then that of the part
    # inside the stack; the reference would index past the end).
    array[:, 2], array[:, 5] = np.clip(z_min, 0, depth - 1), np.clip(z_max, 0, depth - 1)
    return array


def _tracks_for_boxes(boxes: np.ndarray, depth: int, include_end_slices: bool) -> tuple[list, list]:
    up, down = [], []
    for index, (x0, y0, z0, x1, y1, z1) in enumerate(boxes):
        mid = int((z1 - z0) / 2 + z0)
        box = np.array([x0, y0, x1, y1], dtype=np.float64)
        top = min(z1, depth - 1) if include_end_slices else min(z1 - 1, depth - 1)
        bottom = max(z0, 0) if include_end_slices else max(z0 + 1, 0)
        up.append(_Track(index, mid, max(top, mid), +1, box))
        if mid - 1 >= bottom:
            down.append(_Track(index, mid - 1, bottom, -1, box))
    return up, down


def segment_volume(
    predictor: BoxPredictor,
    volume: np.ndarray,
    boxes: np.ndarray,
    include_end_slices: bool = True,
    stop_when_empty: bool | None = None,
    volume_key: Hashable | None = None,
    rules: PropagationRules = DEFAULT_RULES,
    lookahead: int | None = None,
    encode_batch: int | None = None,
    paste: bool = True,
) -> Generator[SliceResult, None, np.ndarray | None]:
    """Segment N 3D boxes in a (D, H, W) uint8 stack; returns (D, H, W) labels 1..N.

    Later boxes overwrite earlier ones where they overlap, like the reference.
    ``rules=REFERENCE_RULES`` (with ``include_end_slices`` as the reference in question has
    it) reproduces the reference exactly; ``stop_when_empty``, when given, overrides that rule.
    ``lookahead`` slices are encoded ahead in a background thread while a slice decodes (0: the
    plain loop; None: :func:`~.cores.lookahead_for`, 0 on a CPU with 2 cores, where the two
    threads would only compete, else 1), ``encode_batch`` per encoder call
    (None: the predictor's ``slices_per_encode``, 2 where a graph runtime encodes them side
    by side); the labels do not
    depend on either (up to float32 rounding with ``encode_batch`` > 1).
    ``paste=False``: return None instead of the label volume, for a caller that writes the
    yielded slices itself (a stack bigger than memory: no (D, H, W) array is made).
    """
    if stop_when_empty is not None:
        rules = rules.with_options(stop_when_empty=stop_when_empty)
    # A VolumeSlices (lazy stack) is read slice by slice; anything else becomes an array.
    volume = volume if isinstance(volume, VolumeSlices) else np.asarray(volume)
    if len(volume.shape) != 3:
        raise PredictorError(f"a volume must be (D, H, W), got shape {volume.shape}")
    checked = check_boxes_3d(boxes, volume.shape[0])
    up, down = _tracks_for_boxes(checked, volume.shape[0], include_end_slices)
    masks = yield from _run_tracks(
        predictor, volume, up, down, rules, volume_key, lookahead, encode_batch
    )
    return _paste_in_order(masks, len(checked), volume.shape) if paste else None


def propagate_from_key_slices(
    predictor: BoxPredictor,
    volume: np.ndarray,
    key_boxes: dict[int, np.ndarray],
    z_range: tuple[int, int] | None = None,
    volume_key: Hashable | None = None,
    rules: PropagationRules = KEY_SLICE_RULES,
    lookahead: int | None = None,
) -> Generator[SliceResult, None, dict[int, np.ndarray]]:
    """Segment one object from boxes drawn on several key slices.

    Between two neighbouring key slices each half of the gap is filled from its nearer key
    slice (with ``rules.fill_gaps_from_both_ends``, the whole gap from both, keeping per slice
    the mask with the higher IoU prediction); beyond the outermost key slices the object is
    followed until it vanishes (or ``z_range`` ends, default the whole stack).
    Returns ``{z: (H, W) bool mask}``.
    Key-slice boxes are 2D, so ``clamp_to_box`` has nothing to clamp to; the object is always
    followed only until it vanishes (``stop_when_empty`` is forced on). ``lookahead``: as in
    :func:`segment_volume`.
    """
    rules = rules.with_options(stop_when_empty=True)
    if not key_boxes:
        raise PredictorError("propagation needs at least one box on a key slice")
    depth = volume.shape[0]
    low, high = z_range if z_range is not None else (0, depth - 1)
    keys = sorted(int(z) for z in key_boxes)
    tracks_up, tracks_down = [], []
    for position, z in enumerate(keys):
        box = np.asarray(key_boxes[z], dtype=np.float64)
        below = keys[position - 1] if position > 0 else None
        above = keys[position + 1] if position + 1 < len(keys) else None
        top = high if above is None else (z + above) // 2
        bottom = low if below is None else (below + z) // 2 + 1
        if rules.fill_gaps_from_both_ends:
            # each direction crosses the whole gap; _decode_slice keeps the better mask
            top = top if above is None else above - 1
            bottom = bottom if below is None else below + 1
        tracks_up.append(_Track(0, z, max(top, z), +1, box, is_3d_box=False))
        if z - 1 >= bottom:
            tracks_down.append(_Track(0, z - 1, bottom, -1, box, is_3d_box=False))
    results = yield from _run_tracks(
        predictor, volume, tracks_up, tracks_down, rules, volume_key, lookahead
    )
    return results.get(0, {})


def _run_tracks(
    predictor: BoxPredictor,
    volume: np.ndarray,
    up: list[_Track],
    down: list[_Track],
    rules: PropagationRules,
    volume_key: Hashable | None,
    lookahead: int | None = None,
    encode_batch: int | None = None,
) -> Generator[SliceResult, None, dict[int, dict[int, np.ndarray]]]:
    """Run an upward sweep over ``up`` tracks, then a downward sweep over ``down`` tracks.

    Slices are encoded ``lookahead`` slices ahead of the one decoding, in a background thread,
    ``encode_batch`` slices per encoder call (:class:`~.encode_ahead.EncodeAhead`; None: the
    predictor's ``slices_per_encode``, 1 for a predictor without it). With several slices per
    call the lookahead covers at least one call, so the next call encodes while this one's
    slices decode. Without a lookahead the caller's thread encodes ``encode_batch`` slices per
    call itself.
    """
    if encode_batch is None:
        encode_batch = int(getattr(predictor, "slices_per_encode", 1))
    if lookahead is None:
        device = getattr(predictor, "device", None)  # a stand-in predictor may have none
        lookahead = lookahead_for(usable_cores(), device.type if device is not None else "cpu")
    if lookahead > 0:
        lookahead = max(lookahead, encode_batch)
    masks: dict[int, dict[int, np.ndarray]] = {}
    # (object, z) -> IoU prediction of the kept mask, and its contrast where a rule needs it
    scores: dict[tuple[int, int], float] = {}
    contrasts: dict[tuple[int, int], float | None] = {}
    total = sum(abs(t.stop - t.start) + 1 for t in up + down)
    done = 0
    encoded: set[int] = set()
    key = volume_key if volume_key is not None else ("volume", id(volume))
    sweeps = [(tracks, _sweep(tracks, step)) for tracks, step in ((up, +1), (down, -1))]
    order = [z for tracks, z_values in sweeps for z in z_values if _any_covers(tracks, z)]
    with EncodeAhead(predictor, volume, order, key, lookahead, encode_batch) as encodings:
        for tracks, z_values in sweeps:
            for z in z_values:
                active = [t for t in tracks if t.covers(z)]
                if not active:
                    continue
                encoded_slice = encodings.get(z)
                encoded.add(z)
                for index, _, mask, box in _decode_slice(
                    predictor, z, active, encoded_slice, masks, rules, scores, contrasts
                ):
                    done += 1
                    yield SliceResult(index, z, mask, done, total, len(encoded), box)
    return masks


def _sweep(tracks: list[_Track], step: int) -> range:
    """The slices one sweep walks, in order (empty without tracks)."""
    if not tracks:
        return range(0)
    z_values = [z for t in tracks for z in (t.start, t.stop)]
    if step > 0:
        return range(min(z_values), max(z_values) + 1)
    return range(max(z_values), min(z_values) - 1, -1)


def _any_covers(tracks: list[_Track], z: int) -> bool:
    return any(t.covers(z) for t in tracks)


def _decode_slice(
    predictor: BoxPredictor,
    z: int,
    active: list[_Track],
    encoded_slice,
    masks: dict[int, dict[int, np.ndarray]],
    rules: PropagationRules,
    scores: dict[tuple[int, int], float],
    contrasts: dict[tuple[int, int], float | None],
) -> Generator[tuple[int, int, np.ndarray, np.ndarray], None, None]:
    """Decode every active track on slice ``z`` in one call; yields (index, z, mask, box_256).

    Each track's mask, end and state are settled before its tuple is yielded. A slice two
    tracks of one object reach (key-slice gaps filled from both ends) keeps the mask with the
    higher IoU prediction in ``masks``, and that kept mask is yielded; each track still
    follows its own masks. With ``rules.min_contrast_ratio`` each mask's contrast is kept in
    ``contrasts`` and compared with its track's starting slice's (decoded by the upward sweep,
    which runs first).
    """
    boxes_256 = np.stack([_box_for(t, z, encoded_slice, masks, rules) for t in active])
    prediction = predictor.predict_256(boxes_256, encoded_slice, slice_index=z)
    for track, mask, box, score in zip(active, prediction.masks, boxes_256, prediction.scores):
        previous = _previous_mask(track, z, masks)
        mask = rules.clean(mask, previous)
        # The starting (key) slice is always kept; the user's own box is no guess.
        followed = not (track.step > 0 and z == track.start)
        ratio = None
        if rules.min_contrast_ratio > 0:
            contrast = _contrast_on(encoded_slice, mask)
            key_z = track.start if track.step > 0 else track.start + 1
            if not followed:
                contrasts[(track.index, z)] = contrast
            ratio = contrast_ratio(contrast, contrasts.get((track.index, key_z)))
        if followed and rules.ends(mask, previous, float(score), ratio):
            mask = np.zeros_like(mask)
            track.ended = True
        track.previous = mask
        if rules.stop_when_empty and not mask.any() and followed:
            track.ended = True
        kept_score = scores.get((track.index, z))
        if kept_score is None or float(score) > kept_score:
            masks.setdefault(track.index, {})[z] = mask
            scores[(track.index, z)] = float(score)
        yield track.index, z, masks[track.index][z], box


def _contrast_on(encoded_slice, mask: np.ndarray) -> float | None:
    """:func:`~.propagation_rules.mask_contrast` of an (H, W) mask on the slice as the model
    saw it (the 256 frame without its padding)."""
    height, width = encoded_slice.new_size
    mask_256 = transforms.mask_to_256(mask.astype(np.uint8)) > 0
    return mask_contrast(encoded_slice.image_256[..., :height, :width], mask_256[:height, :width])


def _previous_mask(track: _Track, z: int, masks) -> np.ndarray | None:
    """The track's own mask on the slice before ``z``; on its first slice, the object's."""
    if track.previous is not None:
        return track.previous
    return masks.get(track.index, {}).get(z - track.step)


def _box_for(track: _Track, z: int, encoded_slice, masks, rules: PropagationRules) -> np.ndarray:
    """The 256-frame box for ``track`` on slice ``z``."""
    size = encoded_slice.original_size
    start_box = transforms.boxes_to_256(track.mid_box[None], size)[0].astype(np.float64)
    if z != track.start or track.step < 0:
        previous = _previous_mask(track, z, masks)
        if previous is not None and previous.any():
            limit = start_box if track.is_3d_box else None
            box = rules.next_box_256(previous, track.index + 1, limit)
            if box is not None:
                return box
    return start_box


def _paste_in_order(
    masks: dict[int, dict[int, np.ndarray]], count: int, shape: tuple[int, ...]
) -> np.ndarray:
    dtype = np.uint8 if count < 256 else np.uint16
    segs = np.zeros(shape, dtype=dtype)
    for index in range(count):
        for z, mask in masks.get(index, {}).items():
            segs[z][mask] = index + 1
    return segs
