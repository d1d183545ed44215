"""A predictor factory for cohort tests, importable by Dask worker processes by name
(``PredictorRecipe(factory="cohort_stub:make_predictor")``): the instant stand-in model of
:mod:`stub_segmenter`, optionally with a fault: the first worker process to reach its second
encode after ``die_once_marker`` is claimed kills itself (SIGKILL, as the OOM killer would)."""

from __future__ import annotations

import os
import signal

from stub_segmenter import stub_predictor


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
