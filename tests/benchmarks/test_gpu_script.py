"""The prepared GPU benchmark (``benchmarks/bench_gpu.py``) runs end to end on the CPU.

No GPU is needed: the same code that would time the CUDA path runs here on a tiny case, so the
script is known to work the day a GPU is at hand. Nothing here asserts a speed.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def bench_gpu():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module("bench_gpu")
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.mark.slow
def test_a_dry_run_on_the_cpu_reports_every_part(bench_gpu, tmp_path, capsys):
    out = tmp_path / "gpu.json"
    argv = ["--device", "cpu", "--models", "litemedsam", "--precisions", "fp32"]
    argv += ["--batches", "1,2", "--repeats", "1", "--slices", "4", "--size", "96"]
    argv += ["--encode-batch", "2", "--json", str(out)]
    assert bench_gpu.main(argv) == 0
    report = json.loads(out.read_text())
    assert report["device"]["device"] == "cpu"
    rows = {row["item"]: row for row in report["rows"]}
    parts = {row["section"] for row in report["rows"]}
    assert parts == {"first mask", "encoder", "propagation"}
    for batch in (1, 2):
        numbers = rows[f"litemedsam: fp32, {batch} slice(s) per call"]["numbers"]
        assert numbers["seconds_per_slice"] > 0
        assert numbers["difference"] < 1e-4  # float32 against float32: batching only
    propagation = rows["litemedsam: 4×96² CT, fp32"]["numbers"]
    assert propagation["seconds_per_slice"] > 0
    assert "| encoder |" in capsys.readouterr().out


def test_the_ct_case_has_the_asked_size_and_a_box_per_structure(bench_gpu):
    volume, boxes = bench_gpu.ct_case(slices=300, size=64)
    assert volume.shape == (300, 64, 64) and volume.dtype == "uint8"
    assert boxes.shape == (2, 6)  # the head CT sample's two labelled structures
    x0, y0, z0, x1, y1, z1 = boxes.T
    assert (x0 <= x1).all() and (y0 <= y1).all() and (z0 < z1).all() and (z1 < 300).all()


def test_half_precisions_propagate_on_a_gpu_only(bench_gpu, monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert bench_gpu.runs_on("fp32", cpu) and not bench_gpu.runs_on("fp16", cpu)
    assert not bench_gpu.runs_on("bf16", cpu)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    assert bench_gpu.runs_on("fp16", cuda) and not bench_gpu.runs_on("bf16", cuda)


def test_asking_for_cuda_without_a_gpu_says_what_to_do(bench_gpu, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit):
        bench_gpu.main(["--device", "cuda"])
    assert "pass --device cpu for a dry run" in capsys.readouterr().err


def test_an_unknown_precision_is_refused_with_the_choices(bench_gpu, capsys):
    with pytest.raises(SystemExit):
        bench_gpu.main(["--device", "cpu", "--precisions", "int4"])
    assert "choose from ['bf16', 'fp16', 'fp32']" in capsys.readouterr().err
