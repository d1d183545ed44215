"""The CPU cores this process may use, and what that means for encoding ahead in a thread.

Imports the standard library only (the cohort runner reads the core count before any worker
loads torch).
"""

from __future__ import annotations

import os

#: Up to this many cores, a 3D propagation on the CPU encodes each slice when it is needed
#: instead of ahead of it in a second thread (see :func:`lookahead_for`).
FEW_CORES = 2


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def lookahead_for(cores: int, device_type: str = "cpu") -> int:
    """Slices a 3D propagation encodes ahead of the one decoding (0 or 1).

    Encoding ahead runs the encoder in a second thread while the caller's thread decodes; it
    pays where the encoder leaves something free for the decoding thread (a GPU, more cores
    than an encode keeps busy). On :data:`FEW_CORES` cores or fewer an encode already keeps
    both busy and the two threads only compete. Measured on 2 cores (LiteMedSAM, nuclei3d,
    5 objects, docs/performance.md): torch encoded ahead 104 s against 68 s in turn (40
    slices), 122 s against 86 s (60 slices); ONNX Runtime with two slices side by side
    58.2 against 59.7 s (40 slices) but 73.3 against 66.8 s (60 slices); OpenVINO 49.8 against
    52.2 s (±16 %). Never a clear gain there: 0 on few cores, 1 elsewhere.
    """
    if device_type == "cpu" and cores <= FEW_CORES:
        return 0
    return 1
