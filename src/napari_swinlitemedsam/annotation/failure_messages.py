"""What the widget tells the user when a background job fails.

A worker can die of anything: our own specific errors (``PredictorError``, ``CheckpointError``,
...) already carry a message that says what to do and are shown as they are. The others come
from deep inside numpy or torch and mean little to an annotator; the common ones (running out of
memory, a GPU that went away) get a plain sentence with advice, the rest keep their text behind
the name of the step that failed.

No napari and no Qt here: the annotator passes the text on to a notification and its status line.
"""

from __future__ import annotations

from napari_swinlitemedsam.annotation.jobs import JobKind

OUT_OF_MEMORY_MARKERS = (
    "out of memory",
    "can't allocate memory",
    "cannot allocate memory",
    "defaultcpuallocator",
    "unable to allocate",
)
"""Substrings (lower case) of the messages torch and numpy use for a failed allocation."""


def is_out_of_memory(error: BaseException) -> bool:
    """True for ``MemoryError`` and for torch / numpy allocation failures (CPU or GPU)."""
    if isinstance(error, MemoryError):
        return True
    text = str(error).lower()
    return any(marker in text for marker in OUT_OF_MEMORY_MARKERS)


def explain_failure(error: BaseException, job_kind: JobKind | None = None) -> str:
    """One or two sentences for the user about ``error`` raised while running ``job_kind``
    (None: the step is not known)."""
    step = "the model" if job_kind is None else job_kind.value
    if is_out_of_memory(error):
        return (
            f"out of memory while {step}. Nothing was changed. Close other programs or images, "
            "choose the CPU device if a GPU ran out, or crop the image to the region you label, "
            "then try again"
        )
    if isinstance(error, (ValueError, OSError)) and str(error):
        return str(error)  # our own errors (subclasses of these) say what to do already
    text = str(error) or "no details"
    return f"{type(error).__name__} while {step}: {text}. Nothing was changed"
