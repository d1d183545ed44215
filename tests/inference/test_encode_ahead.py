"""Pipelined 3D propagation: slices encoded ahead in a background thread, batched encodes.

The stand-in segmenter (tests/stub_segmenter.py) is instant and counts its encodes, so the
schedule (which slices are encoded, how often, in which thread) is checked without a real model;
one test runs the real LiteMedSAM network (random weights) through both schedules.
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
import torch

from napari_swinlitemedsam.inference.embedding_cache import EmbeddingCache
from napari_swinlitemedsam.inference.encode_ahead import EncodeAhead
from napari_swinlitemedsam.inference.generators import run_to_end
from napari_swinlitemedsam.inference.predictor import BoxPredictor, PredictorError
from napari_swinlitemedsam.inference.volume import (
    REFERENCE_RULES,
    propagate_from_key_slices,
    segment_volume,
)
from napari_swinlitemedsam.model.registry import build_litemedsam
from stub_segmenter import CountingSegmenter
from tolerances import assert_labels_agree


def blobs_volume(depth: int = 12, size: int = 64) -> np.ndarray:
    """(D, H, W) uint8: two bright discs that shrink towards both ends of the stack."""
    zz, yy, xx = np.mgrid[:depth, :size, :size]
    middle = depth / 2
    radius = np.clip(size / 5 * (1 - np.abs(zz - middle) / depth), 1, None)
    first = (yy - size * 0.3) ** 2 + (xx - size * 0.3) ** 2 < radius**2
    second = (yy - size * 0.7) ** 2 + (xx - size * 0.65) ** 2 < (radius * 0.8) ** 2
    noise = np.random.default_rng(0).integers(0, 30, size=(depth, size, size))
    return (noise + 200 * (first | second)).clip(0, 255).astype(np.uint8)


BOXES = np.array([[8, 8, 1, 32, 32, 10], [30, 34, 2, 54, 56, 9]])


def stub_predictor(**options) -> BoxPredictor:
    return BoxPredictor(CountingSegmenter(), cache=EmbeddingCache(1 << 28), **options)


def record_encode_threads(predictor: BoxPredictor) -> list[str]:
    """Wrap ``predictor.encode``; the returned list gets the thread name of every call."""
    threads: list[str] = []
    encode = predictor.encode

    def recording(image, key=None):
        threads.append(threading.current_thread().name)
        return encode(image, key)

    predictor.encode = recording
    return threads


@pytest.mark.parametrize("lookahead", [0, 1, 3])
def test_labels_do_not_depend_on_the_lookahead(lookahead):
    volume = blobs_volume()
    plain = run_to_end(segment_volume(stub_predictor(), volume, BOXES, lookahead=0))
    predictor = stub_predictor()
    ahead = run_to_end(segment_volume(predictor, volume, BOXES, lookahead=lookahead))
    # Same arithmetic on the same data (batch of one, only another thread): equal labels.
    np.testing.assert_array_equal(ahead, plain)
    assert plain.any()
    # Every slice the objects cover is encoded once, for both objects together.
    assert predictor.model.encode_calls == 10


def test_batched_encodes_give_the_same_labels_within_tolerance():
    volume = blobs_volume()
    plain = run_to_end(segment_volume(stub_predictor(), volume, BOXES, lookahead=0))
    predictor = stub_predictor()
    batched = run_to_end(segment_volume(predictor, volume, BOXES, lookahead=3, encode_batch=3))
    # Another batch size may round the encoder's sums differently (see tests/tolerances.py).
    assert_labels_agree(batched, plain)
    assert predictor.model.encode_calls == 10


def test_without_the_thread_a_batch_is_encoded_in_the_callers_thread():
    volume = blobs_volume()
    plain = run_to_end(segment_volume(stub_predictor(), volume, BOXES, lookahead=0))
    predictor = stub_predictor()
    calls: list[tuple[str, int]] = []
    encode_many = predictor.encode_many

    def recording(images, keys=None):
        calls.append((threading.current_thread().name, len(images)))
        return encode_many(images, keys)

    predictor.encode_many = recording
    paired = run_to_end(segment_volume(predictor, volume, BOXES, lookahead=0, encode_batch=2))
    assert_labels_agree(paired, plain)
    assert predictor.model.encode_calls == 10  # each covered slice once, as one at a time
    assert calls and {name for name, _ in calls} == {threading.current_thread().name}
    assert sum(count for _, count in calls) == 10 and max(count for _, count in calls) == 2


def test_without_the_thread_a_skipped_slice_of_a_pair_is_dropped():
    predictor = stub_predictor()
    volume = blobs_volume()
    with EncodeAhead(predictor, volume, [1, 2, 3, 4, 5, 6], "v", lookahead=0, batch=2) as ahead:
        ahead.get(1)  # encodes 1 and 2
        assert predictor.model.encode_calls == 2
        ahead.get(4)  # 2 and 3 skipped: 4 and 5 encoded together
        assert predictor.model.encode_calls == 4
        fifth = ahead.get(5)  # kept from the pair
        assert predictor.model.encode_calls == 4
    assert fifth is predictor.cache.get((predictor.model_name, ("v", 5)))


def test_encoding_runs_in_a_background_thread_ahead_of_decoding():
    predictor = stub_predictor()
    threads = record_encode_threads(predictor)
    steps = segment_volume(predictor, blobs_volume(), BOXES, lookahead=2)
    next(steps)  # the first slice decoded: the next ones are being encoded meanwhile
    deadline = time.monotonic() + 10
    while predictor.model.encode_calls < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert predictor.model.encode_calls == 3  # the slice decoded and two ahead, no more
    run_to_end(steps)
    assert threads and all(name.startswith("encode-ahead") for name in threads)


def test_closing_the_propagation_stops_the_encoder_thread():
    predictor = stub_predictor()
    before = {t.ident for t in threading.enumerate()}
    steps = segment_volume(predictor, blobs_volume(depth=40), BOXES * [1, 1, 4, 1, 1, 4])
    next(steps)
    steps.close()
    calls = predictor.model.encode_calls
    time.sleep(0.2)
    assert predictor.model.encode_calls == calls  # nothing left running after close
    assert calls <= 3
    assert not [t for t in threading.enumerate() if t.ident not in before and t.is_alive()]


def test_an_early_end_wastes_at_most_the_lookahead():
    # Key-slice rules end a direction at the first empty mask; a blank stack ends at once.
    volume = blobs_volume(depth=30)
    volume[:13] = 0
    volume[17:] = 0
    counts = {}
    for lookahead in (0, 1):
        predictor = stub_predictor()
        result = run_to_end(
            propagate_from_key_slices(
                predictor, volume, {15: np.array([8, 8, 32, 32])}, lookahead=lookahead
            )
        )
        counts[lookahead] = predictor.model.encode_calls
        assert result[15].any()
    assert counts[0] < 30  # the object was not followed through the blank slices
    assert counts[0] <= counts[1] <= counts[0] + 2  # one slice at most per direction


def test_an_encoder_error_reaches_the_caller():
    predictor = stub_predictor()
    volume = blobs_volume()

    def failing(image, key=None):
        raise PredictorError("slice 3 cannot be read")

    predictor.encode = failing
    with pytest.raises(PredictorError, match="slice 3"):
        run_to_end(segment_volume(predictor, volume, BOXES))


def test_slices_out_of_order_and_skipped_slices():
    predictor = stub_predictor()
    volume = blobs_volume()
    with EncodeAhead(predictor, volume, [1, 2, 3, 4, 5, 6], "v", lookahead=1, batch=2) as ahead:
        first = ahead.get(1)
        sixth = ahead.get(6)  # 2-5 skipped
        again = ahead.get(1)  # no longer in the order: encoded (or found in the cache) at once
    assert first.original_size == sixth.original_size == (64, 64)
    assert again is first  # the cache kept it under the same key
    assert (predictor.model_name, ("v", 6)) in predictor.cache
    with pytest.raises(ValueError, match="lookahead"):
        EncodeAhead(predictor, volume, [0], "v", lookahead=-1)


@pytest.fixture(scope="module")
def random_litemedsam():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build_litemedsam().eval()


@pytest.mark.slow  # six real-architecture encodes
def test_real_network_labels_agree_between_schedules(random_litemedsam):
    """Batched encodes on the real architecture round differently from one-slice encodes:
    labels within the suite's tolerance. (Encoding ahead in a thread runs the same arithmetic:
    exact, on the stand-in, above.) Three slices keep the six real encodes cheap."""
    volume = blobs_volume(depth=3)
    boxes = np.array([[8, 8, 0, 32, 32, 2], [30, 34, 1, 54, 56, 2]])
    results = {}
    for label, options in {
        "plain": {"lookahead": 0},
        "batched": {"lookahead": 2, "encode_batch": 2},
    }.items():
        predictor = BoxPredictor(random_litemedsam, cache=EmbeddingCache(1 << 28))
        steps = segment_volume(predictor, volume, boxes, rules=REFERENCE_RULES, **options)
        results[label] = run_to_end(steps)
    assert results["plain"].any()
    assert_labels_agree(results["batched"], results["plain"])


@pytest.mark.parametrize(("cores", "in_background"), [(1, False), (2, False), (4, True)])
def test_the_default_encodes_ahead_only_beyond_two_cores(monkeypatch, cores, in_background):
    from napari_swinlitemedsam.inference import volume as volume_module

    monkeypatch.setattr(volume_module, "usable_cores", lambda: cores)
    predictor = stub_predictor()
    threads = record_encode_threads(predictor)
    labels = run_to_end(segment_volume(predictor, blobs_volume(), BOXES))
    assert labels.any() and len(threads) == 10
    assert all(name.startswith("encode-ahead") == in_background for name in threads)


def test_usable_cores_and_the_lookahead_they_give():
    from napari_swinlitemedsam.inference.cores import lookahead_for, usable_cores

    assert 1 <= usable_cores() <= (os.cpu_count() or 1)
    # on two cores the encoder's and the decoder's thread pools would share them: in turn
    assert [lookahead_for(cores) for cores in (1, 2, 3, 16)] == [0, 0, 1, 1]
    # a GPU leaves the cores free for decoding: encoded ahead
    assert lookahead_for(2, "cuda") == 1
