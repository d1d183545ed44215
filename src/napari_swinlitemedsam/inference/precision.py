"""Numeric precision of the encoder and of the encoded slices a predictor keeps.

Two independent choices. The encoder precision defaults to ``"auto"`` (bf16 only where the CPU
computes it natively and a measured check holds, see :mod:`.runtime_choice`); the storage dtype
defaults to float32.

``precision="bf16"``
    The image encoder (and Swin-LiteMedSAM's skip neck, which runs with it) computes under
    bfloat16 autocast: matrix products and convolutions in bfloat16, with float32 kept where
    autocast keeps it, on a channels-last input. On CPUs with native bfloat16 units
    (AVX512-BF16 or AMX: AMD Zen 4 and later, Intel Sapphire Rapids and later) this is several
    times faster; on CPUs without them it is emulated and many times *slower* than float32
    (:func:`native_bf16_cpu` tells which). Masks change slightly (``docs/performance.md``
    gives the measured DSC change); the decoder always runs in float32.
``feature_dtype=torch.float16``
    Encoded slices are stored in float16, which halves the memory per cached slice (a
    Swin-LiteMedSAM slice: 16 MiB -> 8 MiB), so twice as many slices fit in the same cache
    budget. The decoder converts them back to float32; masks change in a handful of pixels.
``precision="fp16"`` (CUDA GPUs only)
    The encoder computes under float16 autocast, as ``"bf16"`` does under bfloat16: the fast
    half precision of GPUs without bfloat16 (NVIDIA before Ampere: T4, V100). Offered to the
    self-check as a candidate on a CUDA device; on a CPU it is refused (no CPU of ours computes
    float16 faster than float32).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from napari_swinlitemedsam.inference.cpu_features import CPUINFO, describe_cpu
from napari_swinlitemedsam.model.segmenter import ImageFeatures

PRECISIONS = ("fp32", "bf16", "fp16")
HALF_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
PRECISION_OPTIONS = ("auto", *PRECISIONS)  # "auto": chosen by :mod:`.runtime_choice`
FEATURE_DTYPES = (None, torch.float32, torch.float16, torch.bfloat16)


def check_precision(precision: str) -> str:
    """``precision`` if known, else ValueError naming the choices."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def check_feature_dtype(dtype: torch.dtype | None) -> torch.dtype | None:
    """``dtype`` if it is a storage type the decoder can take back, else ValueError."""
    if dtype not in FEATURE_DTYPES:
        raise ValueError(
            "feature_dtype must be None (keep what the encoder gives), torch.float32, "
            f"torch.float16 or torch.bfloat16, got {dtype!r}"
        )
    return dtype


def encoder_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context for the encoder under ``precision`` on ``device``."""
    if precision in HALF_DTYPES:
        return torch.autocast(device.type, dtype=HALF_DTYPES[precision])
    return contextlib.nullcontext()


def encoder_input(images: torch.Tensor, precision: str) -> torch.Tensor:
    """(B, 3, 256, 256) encoder input in the memory layout that suits ``precision``.

    bf16 and fp16: channels-last, which lets the half-precision convolutions (LiteMedSAM's
    TinyViT is mostly convolutions) skip a layout conversion at every layer; float32 is left
    as it is.
    """
    if precision in HALF_DTYPES:
        return images.contiguous(memory_format=torch.channels_last)
    return images


def stored_features(features: ImageFeatures, dtype: torch.dtype | None) -> ImageFeatures:
    """``features`` with every tensor in ``dtype`` (float32 when None).

    Under bf16 autocast the encoder's outputs come out in mixed types; with ``dtype`` None they
    are brought to float32 so that what is cached does not depend on autocast's choices. A
    slice whose values would overflow float16 stays float32.
    """
    target = torch.float32 if dtype is None else dtype
    named = features.tensors()
    if all(t.dtype == target for t in named.values()):
        return features
    if target == torch.float16:
        largest = max(float(t.abs().max()) for t in named.values())
        if largest > torch.finfo(torch.float16).max:
            target = torch.float32
    return features.to(features.embedding.device, target)


def native_bf16_cpu(cpuinfo: Path = CPUINFO) -> bool | None:
    """Whether this CPU has native bfloat16 units (AVX512-BF16 or AMX-BF16).

    ``None`` when it cannot be told (see :mod:`.cpu_features`).
    """
    return describe_cpu(cpuinfo).native_bf16
