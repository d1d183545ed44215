"""Shared test helpers: the parity fixtures in tests/data and the synthetic-weight recipe."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

DATA_DIR = Path(__file__).parent / "data"


def parity_fixture_paths(model: str | None = None) -> list[Path]:
    """Every ``*_parity_*.npz`` in tests/data, optionally only those whose ``model`` field
    matches."""
    paths = sorted(DATA_DIR.glob("*_parity_*.npz"))
    if model is None:
        return paths
    return [p for p in paths if str(np.load(p)["model"]) == model]


def fixture_weights_module():
    """The synthetic-weight recipe shipped with the fixtures (tests/data/fixture_weights.py)."""
    spec = importlib.util.spec_from_file_location(
        "fixture_weights", DATA_DIR / "fixture_weights.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fixture_state_dict(fixture: np.lib.npyio.NpzFile):
    """The weights a fixture names: synthetic (rebuilt from its key list and salt) or real."""
    weights = str(fixture["weights"])
    if weights == "synthetic":
        recipe = fixture_weights_module()
        keys_file = DATA_DIR / Path(str(fixture["keys_file"])).name
        return recipe.make_state_dict(str(keys_file), salt=str(fixture["weights_salt"]))
    if weights == "lite_medsam.pth":
        import torch

        from napari_swinlitemedsam.model.checkpoint import bundled_litemedsam_path

        return torch.load(bundled_litemedsam_path(), map_location="cpu", weights_only=True)
    raise ValueError(f"unknown weights recipe {weights!r} in fixture")


@pytest.fixture(scope="module")
def bench():
    """The benchmark suite's ``run_benchmarks`` module, imported from ``benchmarks/``."""
    folder = str(Path(__file__).resolve().parents[1] / "benchmarks")
    sys.path.insert(0, folder)
    try:
        yield importlib.import_module("run_benchmarks")
    finally:
        sys.path.remove(folder)


@pytest.fixture(scope="session", autouse=True)
def _runtime_files_in_a_temporary_folder(tmp_path_factory):
    """The runtime self-check's decisions and the exported ONNX graphs go to a temporary
    folder of this test session, never to the user's cache folder: through environment
    variables, so that the processes a test starts (command-line runs, cluster workers, the
    benchmarks' fresh processes) use it too."""
    from napari_swinlitemedsam.inference import runtime_choice
    from napari_swinlitemedsam.inference.onnx_encoder import EXPORT_DIR_ENV

    folder = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # the workers of one run share their decisions
        folder = folder.parent
    folder = folder / "runtime-cache"
    folder.mkdir(exist_ok=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(runtime_choice.CHOICE_DIR_ENV, str(folder / "runtime-choice"))
        patch.setenv(EXPORT_DIR_ENV, str(folder / "onnx"))
        yield folder


@pytest.fixture
def shared_embedding_cache(_runtime_files_in_a_temporary_folder):
    """A disk embedding cache shared by every test of this run (and both xdist workers): for
    tests that encode the same real slices (the 17-slice nuclei stack propagated in the 3D
    widget test and in its screenshot), whichever runs first encodes them, the other reads
    them. Only for tests about what is done with the features, not about encoding."""
    from napari_swinlitemedsam.inference.disk_cache import DiskEmbeddingCache

    return DiskEmbeddingCache(_runtime_files_in_a_temporary_folder / "embeddings")


def pytest_configure(config):
    """Under pytest-xdist (``-n 2``) each worker process uses one torch thread: two workers
    with torch's default of one thread per core would oversubscribe the cores, and the
    workers' spin-waiting thread pools then slow each other down.

    pytest-xdist (3.6 and later) hands out the files of ``--dist loadfile`` in the order of
    their number of tests, which puts the few-test, minutes-long files (the benchmark quick
    run: 7 tests, ~5 min on one worker) at the end, where one worker runs them alone while the
    other idles. Its reordering is switched off here, so the order below holds."""
    if hasattr(config, "workerinput"):
        import torch

        torch.set_num_threads(1)
    elif hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
    """Files holding the most ``slow`` tests first (each file's tests in their own order):
    under ``-n 2 --dist loadfile`` the long files start at once and the many short ones fill
    both workers to the end (longest first is the classic rule for balancing two queues).

    Before them all, a file with a ``warms_up`` test (and that test first in it): it measures
    the shipped model's runtime decision, which most widget tests then read from the session's
    folder. Left to chance, two widget tests starting together on both workers needed it at
    once, and one worker waited idle for the other's self-check (~40 s)."""
    slow_tests = Counter(item.path for item in items if item.get_closest_marker("slow"))
    warms_up = {item.path for item in items if item.get_closest_marker("warms_up")}
    first_seen = {path: index for index, path in enumerate(dict.fromkeys(i.path for i in items))}
    items.sort(
        key=lambda item: (
            item.path not in warms_up,
            -slow_tests[item.path],
            first_seen[item.path],
            item.get_closest_marker("warms_up") is None,
        )
    )
