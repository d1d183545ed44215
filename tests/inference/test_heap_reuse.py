"""Freed tensor buffers kept for reuse (inference/heap_reuse.py): where it applies and who asks."""

from __future__ import annotations

import ctypes
import sys

import pytest
import torch

from napari_swinlitemedsam.inference import heap_reuse, runtime_setup
from napari_swinlitemedsam.inference.predictor import BoxPredictor
from napari_swinlitemedsam.model.registry import PROMPTS_BOX
from stub_segmenter import CountingSegmenter


@pytest.mark.skipif(heap_reuse.glibc() is None, reason="the C library here is not glibc")
def test_glibc_takes_the_thresholds_and_a_second_call_changes_nothing():
    assert heap_reuse.keep_freed_buffers() is True
    assert heap_reuse.keep_freed_buffers() is True
    big = torch.ones(64 << 18)  # 64 MiB: allocated, used and freed as before
    assert float(big.sum()) == 64 << 18


def test_other_systems_are_left_alone(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert heap_reuse.glibc() is None
    assert heap_reuse.keep_freed_buffers() is False


def test_a_c_library_without_glibc_symbols_is_left_alone(monkeypatch):
    class Musl:  # has no gnu_get_libc_version
        def mallopt(self, *_):  # pragma: no cover - must not be called
            raise AssertionError("mallopt called outside glibc")

    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(ctypes, "CDLL", lambda _name: Musl())
    assert heap_reuse.keep_freed_buffers() is False


def test_a_refused_threshold_changes_nothing_else(monkeypatch):
    calls = []

    class OldGlibc:
        def gnu_get_libc_version(self):
            return b"2.17"

        def mallopt(self, parameter, value):
            calls.append(parameter)
            return 0  # refused

    monkeypatch.setattr(heap_reuse, "glibc", lambda: OldGlibc())
    assert heap_reuse.keep_freed_buffers() is False
    assert calls == [-3]  # the trim threshold was not touched after the refusal


def test_loading_a_cpu_model_for_use_keeps_freed_buffers(monkeypatch, tmp_path):
    asked = []
    monkeypatch.setattr(runtime_setup, "keep_freed_buffers", lambda: asked.append(True))
    runtime_setup.build_measured(
        BoxPredictor, CountingSegmenter(), PROMPTS_BOX, "stub", None, "fp32", "torch", tmp_path
    )
    assert asked == [True]
