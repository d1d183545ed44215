"""What this CPU can do natively: its model name and instruction-set flags.

Only one question matters to the inference code: does the CPU compute bfloat16 in hardware
(``avx512_bf16`` or ``amx_bf16`` on x86: AMD Zen 4 and later, Intel Cooper Lake / Sapphire
Rapids and later)? Where it does not, PyTorch emulates bfloat16 and the encoder runs many times
*slower* than in float32, so "not known" must be treated as "no".

Sources, in order: the ``flags`` line of ``/proc/cpuinfo`` (Linux), then PyTorch's own
detection (``torch.cpu.get_capabilities``, present in recent versions; used on macOS and
Windows). ARM's ``bf16`` extension is not counted: PyTorch's CPU kernels do not use it for the
matrix products that dominate our encoders.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
# Flags worth naming in reports and cache keys (the rest do not change which runtime wins).
VECTOR_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "fma")
CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class CpuDescription:
    """A CPU as far as the runtime choice cares.

    Attributes:
        model: the model name (``"AMD EPYC 7B13"``), or the platform's processor string.
        flags: instruction-set flags, lower case; empty when ``flags_known`` is False.
        flags_known: whether any source reported flags at all.
    """

    model: str
    flags: frozenset[str]
    flags_known: bool

    @property
    def native_bf16(self) -> bool | None:
        """True/False when the flags are known, None when they are not."""
        if not self.flags_known:
            return None
        return bool(NATIVE_BF16_FLAGS & self.flags)

    @property
    def vector_flags(self) -> tuple[str, ...]:
        """The flags of :data:`VECTOR_FLAGS` this CPU has, in that order."""
        return tuple(flag for flag in VECTOR_FLAGS if flag in self.flags)

    def summary(self) -> str:
        """One line: model and the vector flags, e.g. ``AMD EPYC (avx2, fma; no native bf16)``."""
        native = {True: "native bf16", False: "no native bf16", None: "bf16 unknown"}
        flags = ", ".join(self.vector_flags) or "flags unknown"
        return f"{self.model} ({flags}; {native[self.native_bf16]})"


def parse_cpuinfo(text: str) -> CpuDescription:
    """A :class:`CpuDescription` from the text of ``/proc/cpuinfo`` (first processor only)."""
    model, flags = "", None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key in ("flags", "Features") and flags is None:  # x86 / ARM spelling
            flags = frozenset(value.split())
        if model and flags is not None:
            break
    return CpuDescription(
        model or platform.processor() or platform.machine(), flags or frozenset(), flags is not None
    )


def torch_capabilities() -> Mapping[str, object] | None:
    """PyTorch's runtime CPU detection, or None where this PyTorch has none."""
    probe = getattr(torch.cpu, "get_capabilities", None)
    if probe is None:
        return None
    try:
        return probe()
    except RuntimeError:
        return None


def describe_cpu(
    cpuinfo: Path = CPUINFO,
    capabilities: Callable[[], Mapping[str, object] | None] = torch_capabilities,
) -> CpuDescription:
    """This machine's CPU: ``/proc/cpuinfo`` where readable, else PyTorch's detection.

    ``cpuinfo`` and ``capabilities`` are parameters so that the decision can be tested with
    any CPU's text, whatever the machine running the tests.
    """
    try:
        return parse_cpuinfo(cpuinfo.read_text())
    except OSError:
        pass
    model = platform.processor() or platform.machine()
    found = capabilities()
    if not found:
        return CpuDescription(model, frozenset(), False)
    flags = frozenset(name for name, value in found.items() if value is True)
    return CpuDescription(model, flags, True)
