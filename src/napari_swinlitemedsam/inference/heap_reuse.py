"""Keep freed tensor buffers in the process for reuse instead of handing them back to the OS.

torch allocates CPU tensors with the C library's ``malloc``. glibc serves a large block (more
than ~32 MiB at most, by its adaptive default) with a fresh ``mmap`` and unmaps it when freed,
and it returns freed memory at the top of its heap to the OS once more than a few MiB lie
there. An encoder pass allocates and frees activations of tens of MiB (LiteMedSAM's TinyViT:
64 MiB buffers at full resolution), so every pass maps them anew and the kernel zero-fills each
page on first touch: on the 2-core development CPU LiteMedSAM's torch encode took 2.54 s
that way and **1.40 s** with the thresholds below, Swin-LiteMedSAM's 1.57 s and 1.30 s; the
graph runtimes, which keep their own arenas, were unchanged (``benchmarks/bench_heap_reuse.py``,
docs/performance.md).

The price is memory held, not used: up to :data:`TRIM_THRESHOLD_BYTES` of freed heap stays in
the process after a peak, and blocks under :data:`MMAP_THRESHOLD_BYTES` come from the heap,
which the OS can only take back from its top. The setting is the process's (glibc has one
heap policy per process), like ``torch.set_num_threads``: :func:`keep_freed_buffers` is called
where a model is loaded for use (``BoxPredictor.from_pretrained``, the fine-tuning runner),
never on import. Other C libraries (macOS, Windows, musl) are left as they are.
"""

from __future__ import annotations

import ctypes
import sys

#: Blocks under this size come from the heap (glibc's ``M_MMAP_THRESHOLD``). 128 MiB kept the
#: gain in a sweep of 32 MiB-1 GiB (32 MiB kept none of it); 256 MiB leaves room.
MMAP_THRESHOLD_BYTES = 256 << 20
#: Freed memory at the top of the heap kept up to this size (``M_TRIM_THRESHOLD``): 512 MiB
#: kept the gain, 128 MiB kept none of it.
TRIM_THRESHOLD_BYTES = 512 << 20
#: ``mallopt`` parameter numbers in glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def glibc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc (it has ``gnu_get_libc_version``), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)  # the symbols already loaded into the process
        libc.gnu_get_libc_version  # noqa: B018 - raises AttributeError outside glibc
        libc.mallopt  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def keep_freed_buffers() -> bool:
    """Set glibc's thresholds so that freed tensor buffers are reused; True when it took.

    Safe to call more than once (the same values again). Returns False, changing nothing,
    where the C library is not glibc or refuses a value (an older glibc caps the mmap
    threshold lower): the process then runs as before.
    """
    libc = glibc()
    if libc is None:
        return False
    if libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(MMAP_THRESHOLD_BYTES)) != 1:
        return False
    return libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(TRIM_THRESHOLD_BYTES)) == 1
