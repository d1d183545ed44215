"""The runtime self-check done a step at a time while the predictor already works on torch
float32: the steps, the switch when it decides, the stored decision, another process's check,
a failure. Trials run on a fake clock (no test depends on this machine's speed); the switch is
checked with the real model: after it, the predictor's masks are those of the chosen runtime,
equal to torch's."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from fake_self_check import CASES, FakeClock, FakePredictor
from napari_swinlitemedsam.inference import deferred_self_check
from napari_swinlitemedsam.inference.cpu_features import parse_cpuinfo
from napari_swinlitemedsam.inference.deferred_self_check import DeferredSelfCheck
from napari_swinlitemedsam.inference.embedding_cache import EmbeddingCache
from napari_swinlitemedsam.inference.predictor import BoxPredictor
from napari_swinlitemedsam.inference.runtime_choice import (
    BASELINE,
    Candidate,
    RuntimeChoice,
    SelfCheck,
    plan_self_check,
    write_cached,
)
from napari_swinlitemedsam.inference.self_check import measure_in_steps
from napari_swinlitemedsam.model.registry import PROMPTS_BOX, build_litemedsam

ORT = Candidate("onnxruntime", "fp32")
EPYC = parse_cpuinfo("model name\t: AMD EPYC 7B13\nflags\t\t: fpu avx2 fma\n")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_litemedsam().eval()


def working_predictor(model) -> BoxPredictor:
    """A predictor as a deferred check starts it: torch float32, "measuring"."""
    return BoxPredictor(model, PROMPTS_BOX, EmbeddingCache(), "litemedsam-test", runtime="torch")


def deferred(model, tmp_path, trial_seconds, clock=None, fails=False):
    """A deferred check of ``model`` between torch fp32 and ONNX Runtime whose trials run on a
    fake clock: ``trial_seconds`` per encode by candidate label."""
    clock = clock if clock is not None else FakeClock()
    planned = SelfCheck(model, (BASELINE, ORT), EPYC, tmp_path / "choice", ("auto", "auto"))
    predictor = working_predictor(model)
    predictor.run_as(planned.baseline("measuring"), "torch")
    tried: dict = {}

    def make(candidate):
        seconds = trial_seconds[candidate.label]
        failing = fails and candidate == BASELINE
        # a later box takes 1/20 of an encode, so the faster encoder also decodes faster
        tried[candidate] = FakePredictor(clock, seconds, fails=failing, decode_seconds=seconds / 20)
        return tried[candidate]

    check = DeferredSelfCheck(predictor, planned, make, {}, cases=lambda: CASES, clock=clock)
    predictor.pending_self_check = check
    return predictor, check, planned, clock


def test_the_predictor_works_on_torch_until_the_last_step_then_runs_the_choice(model, tmp_path):
    predictor, check, planned, _ = deferred(
        model, tmp_path, {"torch fp32": 2.0, "onnxruntime fp32": 1.0}
    )
    assert predictor.runtime_choice.how == "measuring"
    assert "measuring" in predictor.describe_runtimes()
    steps = 0
    while not check.step():
        steps += 1
        assert predictor.runtime == "torch" and predictor.pending_self_check is check
    # a warm-up round and a timed one, two candidates each (the fake predictors open no graph)
    assert steps == check.steps_done == 4
    assert (predictor.runtime, predictor.runtime_choice.how) == ("onnxruntime", "measured")
    # an encode and the case's one box
    assert predictor.runtime_choice.seconds == pytest.approx(
        {"torch fp32": 2.1, "onnxruntime fp32": 1.05}
    )
    assert predictor.pending_self_check is None and check.finished and check.step()
    stored = planned.stored()  # the next start reads it: no check at all
    assert stored is not None and stored.runtime == "onnxruntime" and stored.how == "cached"


def test_work_done_between_steps_is_not_counted_in_any_trial(model, tmp_path):
    clock = FakeClock()
    predictor, check, _, _ = deferred(
        model, tmp_path, {"torch fp32": 1.0, "onnxruntime fp32": 2.0}, clock
    )
    while not check.step():
        clock.now += 100.0  # the user's boxes, decoded between two steps
    assert predictor.runtime_choice.seconds == pytest.approx(
        {"torch fp32": 1.05, "onnxruntime fp32": 2.1}
    )
    assert predictor.runtime == "torch"  # the slower candidate stayed slower


def test_after_the_switch_masks_come_from_the_chosen_runtime_and_equal_torchs(model, tmp_path):
    pytest.importorskip("onnxruntime")
    predictor, check, _, _ = deferred(model, tmp_path, {"torch fp32": 2.0, "onnxruntime fp32": 1.0})
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (96, 128), dtype=np.uint8)
    boxes = np.array([[10, 12, 70, 80], [40, 5, 120, 60]])
    predictor.set_image(image, key="slice")
    on_torch = predictor.predict(boxes)
    check.run_to_end()
    assert predictor.graph.encodes and predictor.decoder_runtime == "onnxruntime"
    predictor.set_image(image, key="slice")  # kept in the memory cache from before the switch
    kept = predictor.predict(boxes)  # decoded on ONNX Runtime
    predictor.set_image(image)  # encoded again, now on ONNX Runtime
    again = predictor.predict(boxes)
    span = float(np.ptp(on_torch.low_res_logits))
    for result in (kept, again):
        assert (result.masks != on_torch.masks).sum() <= 2
        assert np.abs(result.low_res_logits - on_torch.low_res_logits).max() <= 1e-3 * span


def test_while_another_process_measures_a_step_waits_its_turn_then_reads_its_decision(
    model, tmp_path, monkeypatch
):
    from filelock import FileLock

    monkeypatch.setattr(deferred_self_check, "LOCK_WAIT_S", 0.01)
    predictor, check, planned, _ = deferred(
        model, tmp_path, {"torch fp32": 2.0, "onnxruntime fp32": 1.0}
    )
    decision = planned.path(with_weights=False)
    decision.parent.mkdir(parents=True)
    other = FileLock(str(decision.with_suffix(".lock")), thread_local=False)
    held = threading.Event()
    release = threading.Event()

    def other_process() -> None:  # a lock held by another thread stands for it
        with other:
            held.set()
            release.wait(30)

    thread = threading.Thread(target=other_process)
    thread.start()
    held.wait(30)
    try:
        assert not check.step() and check.steps_done == 0  # nothing measured meanwhile
    finally:
        # the other process decided and stored its choice before releasing
        write_cached(decision, RuntimeChoice("onnxruntime", "fp32", "measured", decoder="torch"))
        release.set()
        thread.join(30)
    assert check.step()
    assert check.steps_done == 0 and check.choice is not None
    assert (predictor.runtime, predictor.runtime_choice.how) == ("onnxruntime", "cached")
    assert predictor.decoder_runtime == "torch"  # as that process decided


def test_when_torch_itself_fails_the_predictor_stays_on_it_and_the_error_is_raised(model, tmp_path):
    predictor, check, planned, _ = deferred(
        model, tmp_path, {"torch fp32": 2.0, "onnxruntime fp32": 1.0}, fails=True
    )
    with pytest.raises(RuntimeError, match="kernel not available"):
        while not check.step():
            pass
    assert (predictor.runtime, predictor.runtime_choice.how) == ("torch", "not measured")
    assert predictor.pending_self_check is None and check.finished
    assert planned.stored() is None  # measured again at the next start


def test_graph_openings_are_steps_of_their_own_before_the_rounds():
    clock = FakeClock()
    opened = []

    class OpeningPredictor(FakePredictor):
        def graph_openings(self):
            return [lambda: opened.append("encoder"), lambda: opened.append("decoder")]

    predictors = {BASELINE: FakePredictor(clock, 2.0), ORT: OpeningPredictor(clock, 1.0)}
    steps = measure_in_steps([BASELINE, ORT], predictors.__getitem__, CASES, clock=clock)
    assert next(steps) == "onnxruntime fp32" and opened == ["encoder"]
    assert next(steps) == "onnxruntime fp32" and opened == ["encoder", "decoder"]
    assert predictors[ORT].encodes == 0  # the rounds start after the openings
    assert next(steps) == "torch fp32"


def test_from_pretrained_defers_only_a_check_that_is_needed(tmp_path):
    pytest.importorskip("onnxruntime")
    folder = tmp_path / "choice"
    first = BoxPredictor.from_pretrained(
        "litemedsam", runtime_choice_dir=folder, self_check="later"
    )
    check = first.pending_self_check
    assert isinstance(check, DeferredSelfCheck)
    assert (first.runtime, first.runtime_choice.how) == ("torch", "measuring")
    assert first.decoder_runtime == "torch"
    planned = plan_self_check(first.model, choice_dir=folder)
    assert isinstance(planned, SelfCheck)
    write_cached(planned.path(False), RuntimeChoice("onnxruntime", "fp32", "measured"))
    second = BoxPredictor.from_pretrained(
        "litemedsam", runtime_choice_dir=folder, self_check="later"
    )
    assert second.pending_self_check is None
    assert (second.runtime, second.runtime_choice.how) == ("onnxruntime", "cached")
    forced = BoxPredictor.from_pretrained(
        "litemedsam", runtime="torch", precision="fp32", self_check="later"
    )
    assert forced.pending_self_check is None and forced.runtime_choice.how == "forced"
    with pytest.raises(ValueError, match="self_check must be one of"):
        BoxPredictor.from_pretrained("litemedsam", self_check="soon")
