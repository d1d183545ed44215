"""A predictor factory for cohort tests, importable by Dask worker processes by name
(``PredictorRecipe(factory="cohort_stub:make_predictor")``): the instant stand-in model of
:mod:`stub_segmenter`, optionally with a fault: the first worker process to reach its second
encode after ``die_once_marker`` is claimed kills itself (SIGKILL, as the OOM killer would)."""

from __future__ import annotations

import os
import signal

import numpy as np

from stub_segmenter import stub_predictor


def write_case(path, seed: int, three_d: bool = False) -> None:
    """A tiny random challenge case: 2D (40, 48, 3) with two boxes, or 3D (5, 40, 48) with one."""
    rng = np.random.default_rng(seed)
    if three_d:
        imgs = rng.integers(0, 255, (5, 40, 48), dtype=np.uint8)
        boxes = np.array([[8, 6, 1, 30, 28, 3]])
    else:
        imgs = rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)
        boxes = np.array([[4, 4, 30, 20], [10, 12, 40, 36]])
    np.savez(path, imgs=imgs, boxes=boxes)


def make_predictor(model: str = "stub", device: str = "cpu", die_once_marker=None, **options):
    predictor = stub_predictor(**options)
    if die_once_marker is None:
        return predictor
    original = predictor.encode
    calls = {"encode": 0}

    def encode_or_die(image, key=None):
        calls["encode"] += 1
        if calls["encode"] == 2 and _claim(die_once_marker):
            os.kill(os.getpid(), signal.SIGKILL)  # mid-case: one slice encoded, none written
        return original(image, key)

    predictor.encode = encode_or_die
    return predictor


def _claim(marker: str) -> bool:
    """True for exactly one caller over all processes (the file is created exclusively)."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True
