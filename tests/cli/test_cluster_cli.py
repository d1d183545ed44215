"""``segment --cluster`` from the command line: bad values and a missing ``distributed`` are
usage errors that say what to do; a real ``dask scheduler`` and ``dask worker`` started as
processes on 127.0.0.1 segment real cases (bundled LiteMedSAM weights) as one process does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from napari_swinlitemedsam.cli.main import main

SOURCES = Path(__file__).resolve().parents[2] / "src"


def disc_case(path, centre, radius) -> None:
    yy, xx = np.mgrid[:64, :64]
    image = np.where((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < radius**2, 200, 10)
    top, left = centre[0] - radius - 2, centre[1] - radius - 2
    box = [left, top, left + 2 * radius + 4, top + 2 * radius + 4]
    np.savez(path, imgs=np.dstack([image.astype(np.uint8)] * 3), boxes=np.array([box]))


@pytest.mark.parametrize("spec", ["local:0", "local:two", "somewhere"])
def test_a_bad_cluster_value_is_a_usage_error(tmp_path, capsys, spec):
    disc_case(tmp_path / "2D_a.npz", (32, 32), 12)
    code = main(["segment", str(tmp_path / "2D_a.npz"), "-o", str(tmp_path), "--cluster", spec])
    assert code == 2
    assert "local:N" in capsys.readouterr().err


def test_without_distributed_the_error_names_the_pip_command(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    disc_case(tmp_path / "2D_a.npz", (32, 32), 12)
    code = main(["segment", str(tmp_path), "-o", str(tmp_path / "out"), "--cluster", "local:2"])
    assert code == 2
    assert "pip install 'napari-swinlitemedsam[cluster]'" in capsys.readouterr().err


@pytest.fixture
def scheduler_and_workers(tmp_path):
    """``dask scheduler`` and ``dask worker --nworkers 2`` as processes; yields the address."""
    scheduler_file = tmp_path / "scheduler.json"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SOURCES), os.environ.get("PYTHONPATH", "")]),
    }
    dask = [sys.executable, "-m", "dask"]
    common = ["--scheduler-file", str(scheduler_file), "--no-dashboard"]
    started = [
        subprocess.Popen(
            [*dask, "scheduler", "--host", "127.0.0.1", "--port", "0", *common],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        deadline = time.monotonic() + 120
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(scheduler_file.read_text())["address"]
        started.append(
            subprocess.Popen(
                [
                    *dask,
                    "worker",
                    *common,
                    "--nworkers",
                    "2",
                    "--nthreads",
                    "1",
                    "--local-directory",
                    str(tmp_path / "workers"),
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        from distributed import Client

        with Client(address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=180)
        yield address
    finally:
        for process in reversed(started):
            process.terminate()
        for process in reversed(started):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.mark.slow
def test_a_scheduler_and_workers_started_by_the_user_segment_like_one_process(
    tmp_path, capsys, scheduler_and_workers
):
    inputs = tmp_path / "cases"
    inputs.mkdir()
    disc_case(inputs / "2D_a.npz", (30, 34), 12)
    disc_case(inputs / "2D_b.npz", (36, 28), 16)
    disc_case(inputs / "2D_c.npz", (32, 32), 9)
    here, there = tmp_path / "here", tmp_path / "there"
    assert main(["segment", str(inputs), "-o", str(here), "--device", "cpu"]) == 0
    command = ["segment", str(inputs), "-o", str(there), "--device", "cpu"]
    assert main([*command, "--cluster", scheduler_and_workers]) == 0
    assert "on 2 Dask worker(s)" in capsys.readouterr().out
    for name in ("2D_a.npz", "2D_b.npz", "2D_c.npz"):
        local, remote = np.load(here / name)["segs"], np.load(there / name)["segs"]
        # Same weights and code; the workers run torch on 1 thread, this process on all
        # cores, so float sums may be ordered differently: allow 0.5 % of the pixels.
        assert np.count_nonzero(local != remote) <= 0.005 * local.size, name
        assert local[local.shape[0] // 2, local.shape[1] // 2] == 1
    assert main([*command, "--cluster", scheduler_and_workers, "--skip-done"]) == 0
    assert "(3 finished before, skipped)" in capsys.readouterr().out
