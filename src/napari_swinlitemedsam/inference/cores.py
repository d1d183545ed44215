"""The CPU cores this process may use, and what that means for encoding ahead in a thread.

Imports the standard library only (the command line and the cohort runner read the core count
before torch is loaded).
"""

from __future__ import annotations

import os

#: Up to this many cores, a propagation on torch's CPU encoder encodes each slice when it is
#: needed instead of ahead of it in a second thread (see :func:`lookahead_for`).
FEW_CORES = 2


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def lookahead_for(cores: int, encoder_runtime: str, device_type: str = "cpu") -> int:
    """Slices a 3D propagation encodes ahead of the one decoding (0 or 1).

    Encoding ahead runs the encoder in a second thread while the caller's thread decodes. With
    torch's CPU encoder both threads run a torch thread pool as wide as the cores, and on
    :data:`FEW_CORES` or fewer they only compete: LiteMedSAM's 40-slice, 5-object propagation
    took 104 s encoded ahead against 68 s in turn (docs/performance.md), so 0 there. The graph
    runtimes' pools wait without spinning, and there encoding ahead gained a little (ONNX
    Runtime 58.2 against 59.7 s, OpenVINO 49.8 against 52.2 s), as it does wherever the
    encoder leaves a core or the CPU free (more cores, a GPU): 1.
    """
    if encoder_runtime == "torch" and device_type == "cpu" and cores <= FEW_CORES:
        return 0
    return 1
