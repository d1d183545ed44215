"""The sentences the widget shows when a background job fails."""

from __future__ import annotations

import pytest

from napari_swinlitemedsam.annotation.failure_messages import explain_failure, is_out_of_memory
from napari_swinlitemedsam.annotation.jobs import JobKind
from napari_swinlitemedsam.inference.predictor import PredictorError


@pytest.mark.parametrize(
    "error",
    [
        MemoryError(),
        RuntimeError(
            "DefaultCPUAllocator: not enough memory: you tried to allocate 4294967296 bytes."
        ),
        RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        MemoryError("Unable to allocate 9.3 GiB for an array with shape (300, 512, 512)"),
    ],
)
def test_allocation_failures_become_advice(error):
    assert is_out_of_memory(error)
    text = explain_failure(error, JobKind.ENCODE)
    assert text.startswith("out of memory while encoding the slice")
    assert "crop" in text and "Nothing was changed" in text


def test_our_own_errors_keep_their_message():
    error = PredictorError("boxes [0] lie wholly outside the 10x10 image; draw them on the image")
    assert explain_failure(error, JobKind.DECODE) == str(error)
    assert not is_out_of_memory(error)


def test_other_errors_name_the_step_and_the_type():
    text = explain_failure(RuntimeError("shape mismatch"), JobKind.PROPAGATE)
    assert (
        text
        == "RuntimeError while propagating through the stack: shape mismatch. Nothing was changed"
    )
    assert explain_failure(KeyError(), None).startswith("KeyError while the model: no details")
