"""The CUDA path, exercised without a GPU: what the code would choose and run on one.

No GPU is needed: torch builds ``cuda`` device objects and autocast contexts on any machine,
and torch's availability checks are replaced where the choice depends on them.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from napari_swinlitemedsam.inference.cpu_features import parse_cpuinfo
from napari_swinlitemedsam.inference.precision import encoder_context, encoder_input
from napari_swinlitemedsam.inference.runtime_choice import BASELINE, Candidate, candidates_for
from napari_swinlitemedsam.model.checkpoint import CheckpointError, pick_device

CUDA = torch.device("cuda")
AVX2_HOST = parse_cpuinfo("model name\t: AMD EPYC 7B13\nflags\t\t: avx avx2 fma\n")


@pytest.mark.parametrize("gpu_has_bf16", [True, False])
def test_on_a_gpu_only_torch_runs_and_bf16_follows_the_gpu_not_the_cpu(monkeypatch, gpu_has_bf16):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: gpu_has_bf16)
    # the exported graphs run on the CPU only: installed or not, they are no candidates here
    found = candidates_for("auto", "auto", CUDA, AVX2_HOST, True, True)
    fp16 = Candidate("torch", "fp16")  # every CUDA GPU: the half precision of pre-Ampere GPUs
    assert found == (
        [BASELINE, Candidate("torch", "bf16"), fp16] if gpu_has_bf16 else [BASELINE, fp16]
    )
    assert candidates_for("fp32", "auto", CUDA, AVX2_HOST, True, True) == [BASELINE]
    assert candidates_for("fp16", "auto", CUDA, AVX2_HOST, True, True) == [fp16]


def test_fp16_is_refused_off_a_gpu_with_what_to_use_instead():
    cpu = torch.device("cpu")
    for runtime in ("auto", "torch"):  # forced runtime and precision together too
        with pytest.raises(ValueError, match="runs on a CUDA GPU only, not on cpu; use 'auto'"):
            candidates_for("fp16", runtime, cpu, AVX2_HOST, True, True)
    assert Candidate("torch", "fp16") not in candidates_for(
        "auto", "auto", cpu, AVX2_HOST, True, True
    )


def test_auto_picks_the_gpu_when_there_is_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto") == CUDA
    assert pick_device("cuda:0") == torch.device("cuda", 0)
    assert pick_device("cpu") == torch.device("cpu")


def test_asking_for_a_gpu_that_is_not_there_says_what_to_use(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(CheckpointError, match="no CUDA GPU is available; use cpu"):
        pick_device("cuda")
    assert pick_device("auto") != CUDA


def test_bf16_autocast_is_made_for_the_device_the_encoder_runs_on():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "CUDA is not available, disabling autocast" here
        context = encoder_context("bf16", CUDA)
    assert isinstance(context, torch.autocast)
    assert context.device == "cuda" and context.fast_dtype == torch.bfloat16
    cpu_context = encoder_context("bf16", torch.device("cpu"))
    assert cpu_context.device == "cpu"
    assert not isinstance(encoder_context("fp32", CUDA), torch.autocast)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        half = encoder_context("fp16", CUDA)
    assert isinstance(half, torch.autocast) and half.fast_dtype == torch.float16
    images = torch.zeros(2, 3, 8, 8)
    for half in ("bf16", "fp16"):
        assert encoder_input(images, half).is_contiguous(memory_format=torch.channels_last)
    assert encoder_input(images, "fp32") is images
