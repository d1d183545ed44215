"""The benchmark suite's module, imported from ``benchmarks/`` for the quick-run tests."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH_DIR))
    try:
        yield importlib.import_module("run_benchmarks")
    finally:
        sys.path.remove(str(BENCH_DIR))
