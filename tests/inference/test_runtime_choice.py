"""Precision and runtime chosen by the machine: CPU detection, candidates, the self-check's
decision and its cache. CPUs are injected as /proc/cpuinfo text, never read from the host;
timings come from a fake clock, so no test depends on the speed of the machine running it."""

from __future__ import annotations

import json
import threading
import time
import warnings
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from napari_swinlitemedsam.inference import cpu_features, runtime_choice, runtime_choice_store
from napari_swinlitemedsam.inference.cpu_features import describe_cpu, parse_cpuinfo
from napari_swinlitemedsam.inference.embedding_cache import EmbeddingCache
from napari_swinlitemedsam.inference.onnx_encoder import onnx_available
from napari_swinlitemedsam.inference.predictor import BoxPredictor, Prediction
from napari_swinlitemedsam.inference.runtime_choice import (
    BASELINE,
    Candidate,
    CheckCase,
    EmulatedBf16Warning,
    candidates_for,
    choose_runtime,
    measure,
    pick,
)
from napari_swinlitemedsam.model.registry import PROMPTS_BOX, build_litemedsam
from stub_segmenter import CountingSegmenter

EPYC_AVX2 = (
    "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n"
    "flags\t\t: fpu sse sse2 avx avx2 fma bmi2\n"
)
SAPPHIRE_RAPIDS = (
    "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
    "flags\t\t: fpu avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile\n"
)
ZEN4 = "model name\t: AMD Ryzen 9 7950X\nflags\t\t: avx2 avx512f avx512_bf16\n"
NO_FLAGS = "processor\t: 0\nmodel name\t: Some CPU\n"
CPU = torch.device("cpu")
ORT = Candidate("onnxruntime", "fp32")
BF16 = Candidate("torch", "bf16")


def test_native_bf16_is_read_from_the_flags():
    assert parse_cpuinfo(EPYC_AVX2).native_bf16 is False
    assert parse_cpuinfo(SAPPHIRE_RAPIDS).native_bf16 is True
    assert parse_cpuinfo(ZEN4).native_bf16 is True
    assert parse_cpuinfo(NO_FLAGS).native_bf16 is None
    assert parse_cpuinfo(EPYC_AVX2).model == "AMD EPYC 7B13"
    assert "no native bf16" in parse_cpuinfo(EPYC_AVX2).summary()


def test_without_cpuinfo_torch_detection_decides_and_unknown_stays_unknown(tmp_path):
    missing = tmp_path / "cpuinfo"
    native = describe_cpu(missing, lambda: {"avx2": True, "amx_bf16": True, "architecture": "x86"})
    assert native.native_bf16 is True
    assert describe_cpu(missing, lambda: {"avx2": True, "avx512_bf16": False}).native_bf16 is False
    assert describe_cpu(missing, lambda: None).native_bf16 is None
    missing.write_text(SAPPHIRE_RAPIDS)  # cpuinfo, where readable, comes first
    assert describe_cpu(missing, lambda: {"amx_bf16": False}).native_bf16 is True


@pytest.mark.parametrize(
    ("cpuinfo", "onnx", "precision", "runtime", "expected"),
    [
        (EPYC_AVX2, False, "auto", "auto", [BASELINE]),  # this machine's kind: fp32 only
        (EPYC_AVX2, True, "auto", "auto", [BASELINE, ORT]),
        (NO_FLAGS, True, "auto", "auto", [BASELINE, ORT]),  # unknown => no bf16
        (SAPPHIRE_RAPIDS, True, "auto", "auto", [BASELINE, ORT, BF16]),
        (SAPPHIRE_RAPIDS, True, "fp32", "auto", [BASELINE, ORT]),
        (SAPPHIRE_RAPIDS, True, "auto", "torch", [BASELINE, BF16]),
        (EPYC_AVX2, True, "bf16", "auto", [BF16]),  # forced: allowed, with a warning
        (EPYC_AVX2, True, "auto", "onnxruntime", [ORT]),
        (EPYC_AVX2, True, "fp32", "torch", [BASELINE]),
    ],
)
def test_candidates(cpuinfo, onnx, precision, runtime, expected):
    found = candidates_for(precision, runtime, CPU, parse_cpuinfo(cpuinfo), onnx)
    assert found == expected


def test_openvino_is_a_candidate_where_installed():
    openvino = Candidate("openvino", "fp32")
    epyc = parse_cpuinfo(EPYC_AVX2)
    assert candidates_for("auto", "auto", CPU, epyc, True, True) == [BASELINE, ORT, openvino]
    assert candidates_for("auto", "auto", CPU, epyc, True, False) == [BASELINE, ORT]
    assert candidates_for("auto", "openvino", CPU, epyc, False, True) == [openvino]
    assert candidates_for("auto", "torch", CPU, epyc, True, True) == [BASELINE]


def test_unknown_options_are_refused():
    with pytest.raises(ValueError, match="precision"):
        candidates_for("fp16", "auto", CPU, parse_cpuinfo(EPYC_AVX2), False)
    with pytest.raises(ValueError, match="runtime"):
        candidates_for("auto", "tensorrt", CPU, parse_cpuinfo(EPYC_AVX2), False)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakePredictor:
    """Encodes in ``seconds`` of the fake clock; its masks are a box mask, optionally shrunk
    by ``shrink`` pixels, and its logits are offset by ``logit_error``."""

    clock: FakeClock
    seconds: float
    shrink: int = 0
    logit_error: float = 0.0
    fails: bool = False
    decode_seconds: float = 0.0
    encodes: int = 0

    def set_image(self, image):
        if self.fails:
            raise RuntimeError("kernel not available")
        self.encodes += 1
        self.clock.now += self.seconds
        self.shape = image.shape

    def predict(self, boxes):
        self.clock.now += self.decode_seconds
        masks = np.zeros((len(boxes), *self.shape), bool)
        for mask, (x0, y0, x1, y1) in zip(masks, boxes.astype(int), strict=True):
            s = self.shrink
            mask[y0 + s : y1 + 1 - s, x0 + s : x1 + 1 - s] = True
        logits = np.linspace(-10, 10, 256 * 256, dtype=np.float32).reshape(1, 256, 256)
        logits = np.repeat(logits, len(boxes), axis=0) + self.logit_error
        return Prediction(masks, np.ones(len(boxes)), logits, boxes)


_SHARED_CLOCK = FakeClock()  # the fake predictors of _choose advance it; measure reads it


def _fake_clock_measure(candidates, make_predictor, cases, **options):
    return measure(candidates, make_predictor, cases, clock=_SHARED_CLOCK, **options)


CASES = [CheckCase(np.zeros((120, 120), np.uint8), np.array([[10.0, 10, 109, 109]]))]


def _measure(variants):
    clock = FakeClock()
    predictors = {c: FakePredictor(clock, **options) for c, options in variants.items()}
    return measure(list(variants), predictors.__getitem__, CASES, clock=clock)


def test_a_faster_runtime_that_agrees_is_chosen():
    seconds, rejected, _ = _measure({BASELINE: {"seconds": 2.0}, ORT: {"seconds": 1.0}})
    assert seconds == {"torch fp32": 2.0, "onnxruntime fp32": 1.0}
    assert rejected == {}
    assert pick(seconds, rejected) == ORT


def test_a_gain_within_the_noise_keeps_torch_fp32():
    seconds, rejected, _ = _measure({BASELINE: {"seconds": 2.0}, ORT: {"seconds": 1.9}})
    assert pick(seconds, rejected) == BASELINE


def test_faster_but_different_masks_or_logits_are_rejected():
    # 100x100 box shrunk by 2 px on each side: DSC = 2*96²/(100²+96²) = 0.9796 < 0.98
    seconds, rejected, _ = _measure(
        {BASELINE: {"seconds": 2.0}, BF16: {"seconds": 0.5, "shrink": 2}}
    )
    assert "DSC" in rejected["torch bf16"]
    assert pick(seconds, rejected) == BASELINE
    # float32 runtimes must also keep their logits within 1e-3 of the range (20 here)
    seconds, rejected, _ = _measure(
        {BASELINE: {"seconds": 2.0}, ORT: {"seconds": 0.5, "logit_error": 0.05}}
    )
    assert "logits" in rejected["onnxruntime fp32"]
    # ... which bf16 is not held to: 8 bits of mantissa cannot meet a float32 bound
    seconds, rejected, _ = _measure(
        {BASELINE: {"seconds": 2.0}, BF16: {"seconds": 0.5, "logit_error": 0.05}}
    )
    assert pick(seconds, rejected) == BF16


@pytest.mark.parametrize(
    ("box_only", "speeds", "rounds"),
    [
        # ONNX Runtime 2x faster, boxes too: one timed round after the warm-up settles it
        (True, {BASELINE: (2.0, 0.10), ORT: (1.0, 0.05)}, 2),
        # an 11 % gain: 5 % of noise could take it under the 10 % bar, so all rounds run
        (False, {BASELINE: (2.0, 0.10), ORT: (1.8, 0.10)}, 3),
        # torch stays, clearly: settled
        (False, {BASELINE: (2.0, 0.10), ORT: (2.5, 0.10)}, 2),
        # the encoder's pick is clear but the box decoder's is a near tie (for box-only models)
        (True, {BASELINE: (2.0, 0.10), ORT: (1.0, 0.09)}, 3),
        (False, {BASELINE: (2.0, 0.10), ORT: (1.0, 0.09)}, 2),
        # two graph runtimes within 2 %: either is as good, one more round could not tell
        (
            False,
            {BASELINE: (2.0, 0.10), ORT: (1.0, 0.05), Candidate("openvino", "fp32"): (0.98, 0.05)},
            2,
        ),
    ],
)
def test_the_check_stops_early_only_when_one_more_round_could_not_change_the_decision(
    box_only, speeds, rounds
):
    clock = FakeClock()
    predictors = {
        c: FakePredictor(clock, seconds, decode_seconds=box) for c, (seconds, box) in speeds.items()
    }
    two_cases = [CASES[0], CheckCase(np.zeros((90, 100), np.uint8), np.array([[5.0, 5, 60, 80]]))]
    measured = measure(
        list(speeds),
        predictors.__getitem__,
        two_cases,
        clock=clock,
        settled=runtime_choice.settled_by(box_only),
    )
    assert [p.encodes for p in predictors.values()] == [rounds] * len(speeds)
    assert set(measured.seconds) == {c.label for c in speeds}
    # however many rounds ran, every case was checked (a warm-up and a timed round at least)
    three_cases = [*two_cases, CASES[0]]
    for predictor in predictors.values():
        predictor.encodes = 0
    measure(list(speeds), predictors.__getitem__, three_cases, clock=clock, settled=lambda m: True)
    assert [p.encodes for p in predictors.values()] == [3] * len(speeds)


def test_a_runtime_that_fails_is_left_out():
    seconds, rejected, _ = _measure({BASELINE: {"seconds": 2.0}, ORT: {"seconds": 1, "fails": 1}})
    assert "kernel not available" in rejected["onnxruntime fp32"]
    assert pick(seconds, rejected) == BASELINE


OPENVINO = Candidate("openvino", "fp32")


def test_later_boxes_are_timed_apart_and_their_fastest_runtime_decodes():
    """On the development CPU OpenVINO encoded fastest and ONNX Runtime decoded a box fastest:
    the two steps are chosen apart."""
    measured = _measure(
        {
            BASELINE: {"seconds": 2.0, "decode_seconds": 0.10},
            ORT: {"seconds": 1.5, "decode_seconds": 0.06},
            OPENVINO: {"seconds": 1.0, "decode_seconds": 0.10},
            BF16: {"seconds": 3.0, "decode_seconds": 0.10},
        }
    )
    assert measured.box_seconds == pytest.approx(
        {"torch fp32": 0.10, "onnxruntime fp32": 0.06, "openvino fp32": 0.10}
    )  # bf16 decodes in torch: not timed
    assert pick(measured.seconds, measured.rejected) == OPENVINO
    assert runtime_choice.pick_decoder(measured.box_seconds, measured.rejected) == "onnxruntime"
    # within the noise, or from a candidate whose masks disagreed: torch decodes
    assert runtime_choice.pick_decoder({"torch fp32": 0.1, "onnxruntime fp32": 0.095}, {}) == (
        "torch"
    )
    rejected = {"onnxruntime fp32": "logits differ"}
    assert runtime_choice.pick_decoder(measured.box_seconds, rejected) == "torch"


def test_a_box_only_model_gets_the_measured_decoder_and_others_torch(tmp_path, monkeypatch):
    monkeypatch.setattr(runtime_choice, "measure", _fake_clock_measure)
    speeds = {BASELINE: (2.0, 0.10), ORT: (1.5, 0.06), OPENVINO: (1.0, 0.10)}

    def choose(model):
        return choose_runtime(
            model,
            lambda c: FakePredictor(_SHARED_CLOCK, speeds[c][0], decode_seconds=speeds[c][1]),
            cpu=parse_cpuinfo(EPYC_AVX2),
            onnx_installed=True,
            openvino_installed=True,
            choice_dir=tmp_path,
            cases=lambda: CASES,
        )

    lite = choose(build_litemedsam())
    assert (lite.label, lite.decoder) == ("openvino fp32", "onnxruntime")
    assert lite.box_gain("onnxruntime") == pytest.approx(0.10 / 0.06)
    cached = choose(build_litemedsam())
    assert (cached.how, cached.decoder) == ("cached", "onnxruntime")
    # a stand-in that is not a segmenter (as a decoder needing more than boxes): torch decodes
    assert choose(_Model(1.0)).decoder == "torch"
    # nothing measured: boxes are decoded on the encoder's graph runtime, if any
    assert runtime_choice.RuntimeChoice("openvino", "fp32", "forced").decoder == "openvino"
    assert runtime_choice.RuntimeChoice("torch", "fp32", "forced").decoder == "torch"


class _Model(torch.nn.Module):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.full((2,), value))


def _choose(model, tmp_path, made, cpuinfo=SAPPHIRE_RAPIDS, onnx=True, **options):
    clock = _SHARED_CLOCK
    speeds = {BASELINE: 2.0, ORT: 1.5, BF16: 0.8}

    def make(candidate):
        made.append(candidate)
        return FakePredictor(clock, speeds[candidate])

    return choose_runtime(
        model,
        make,
        cpu=parse_cpuinfo(cpuinfo),
        onnx_installed=onnx,
        openvino_installed=False,
        choice_dir=tmp_path,
        cases=lambda: CASES,
        **options,
    )


class _OtherArchitecture(_Model):
    def __init__(self, value: float) -> None:
        super().__init__(value)
        self.bias = torch.nn.Parameter(torch.zeros(3))


def test_the_decision_is_measured_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setattr(runtime_choice, "measure", _fake_clock_measure)
    made = []
    first = _choose(_Model(1.0), tmp_path, made)
    assert (first.label, first.how) == ("torch bf16", "measured")
    assert first.describe() == "torch bf16 (measured, 2.50x torch fp32)"
    assert len(made) == 3
    again = _choose(_Model(1.0), tmp_path, made)
    assert (again.label, again.how, len(made)) == ("torch bf16", "cached", 3)
    (decision,) = tmp_path.glob("*.json")
    decision.write_text("{not json")
    _choose(_Model(1.0), tmp_path, made)  # unreadable decision: measured again, no error
    assert len(made) == 6
    # a bfloat16 decision holds for these weights only: new weights are measured again
    _choose(_Model(2.0), tmp_path, made)
    assert len(made) == 9
    stored = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
    assert all(entry["runtime"] in ("torch", "onnxruntime") for entry in stored)


def test_a_float32_decision_holds_for_new_weights_of_the_same_architecture(tmp_path, monkeypatch):
    """A fine-tuned model runs at its base model's speed: no second self-check."""
    monkeypatch.setattr(runtime_choice, "measure", _fake_clock_measure)
    made = []
    first = _choose(_Model(1.0), tmp_path, made, cpuinfo=EPYC_AVX2)
    assert (first.label, first.how, len(made)) == ("onnxruntime fp32", "measured", 2)
    fine_tuned = _choose(_Model(2.0), tmp_path, made, cpuinfo=EPYC_AVX2)
    assert (fine_tuned.label, fine_tuned.how, len(made)) == ("onnxruntime fp32", "cached", 2)
    other = _choose(_OtherArchitecture(1.0), tmp_path, made, cpuinfo=EPYC_AVX2)
    assert (other.how, len(made)) == ("measured", 4)
    assert len(list(tmp_path.glob("*.json"))) == 2


def test_a_second_process_waits_for_the_running_self_check_and_reads_its_decision(
    tmp_path, monkeypatch
):
    from filelock import FileLock

    monkeypatch.setattr(runtime_choice, "measure", _fake_clock_measure)
    _choose(_Model(1.0), tmp_path, [], cpuinfo=EPYC_AVX2)
    (decision,) = tmp_path.glob("*.json")
    stored = decision.read_text()
    decision.unlink()
    holding = threading.Event()

    def another_process_mid_check() -> None:
        lock = FileLock(str(decision.with_suffix(".lock")), thread_local=False)
        with lock:
            holding.set()
            time.sleep(0.5)
            decision.write_text(stored)

    finisher = threading.Thread(target=another_process_mid_check)
    finisher.start()
    assert holding.wait(10)
    made = []
    started = time.monotonic()
    waited = _choose(_Model(1.0), tmp_path, made, cpuinfo=EPYC_AVX2)
    assert time.monotonic() - started < runtime_choice_store.SELF_CHECK_WAIT_S / 2
    finisher.join()
    assert (waited.how, waited.label, made) == ("cached", "onnxruntime fp32", [])


def test_the_decision_folder_can_be_set_for_every_process(tmp_path, monkeypatch):
    """One folder for all processes of a run (cluster workers, a test session's children)."""
    monkeypatch.setenv(runtime_choice.CHOICE_DIR_ENV, str(tmp_path / "shared"))
    assert runtime_choice.default_choice_dir() == tmp_path / "shared"
    monkeypatch.delenv(runtime_choice.CHOICE_DIR_ENV)
    assert runtime_choice.default_choice_dir().name == "runtime-choice"
    assert tmp_path not in runtime_choice.default_choice_dir().parents


def test_one_candidate_or_a_forced_choice_measures_nothing(tmp_path):
    made = []
    avx2 = _choose(_Model(1.0), tmp_path, made, cpuinfo=EPYC_AVX2, onnx=False)
    assert (avx2.label, avx2.how) == ("torch fp32", "only candidate")
    forced = _choose(_Model(1.0), tmp_path, made, precision="bf16")
    assert (forced.label, forced.how) == ("torch bf16", "forced")
    assert made == [] and not list(tmp_path.iterdir())


def test_the_bare_constructor_never_measures_and_defaults_to_torch_fp32():
    predictor = BoxPredictor(CountingSegmenter(), PROMPTS_BOX, EmbeddingCache())
    assert (predictor.runtime, predictor.precision) == ("torch", "fp32")
    assert predictor.runtime_choice.how in ("only candidate", "not measured")


def _stub_cpu(monkeypatch, text):
    monkeypatch.setattr(cpu_features, "describe_cpu", lambda *a, **k: parse_cpuinfo(text))


def test_explicit_bf16_on_an_emulating_cpu_warns_with_the_slowdown(monkeypatch):
    _stub_cpu(monkeypatch, EPYC_AVX2)
    with pytest.warns(EmulatedBf16Warning, match=r"emulated.*slower than fp32"):
        predictor = BoxPredictor(CountingSegmenter(), PROMPTS_BOX, precision="bf16")
    assert predictor.precision == "bf16"  # a warning, not a refusal
    _stub_cpu(monkeypatch, SAPPHIRE_RAPIDS)
    with warnings.catch_warnings():
        warnings.simplefilter("error", EmulatedBf16Warning)
        BoxPredictor(CountingSegmenter(), PROMPTS_BOX, precision="bf16")


@pytest.mark.slow
@pytest.mark.warms_up
@pytest.mark.skipif(not onnx_available(), reason="onnxruntime and onnx are not installed")
def test_real_self_check_of_the_shipped_model_finds_the_graph_runtimes_agree_with_torch():
    """The real check of the shipped LiteMedSAM on the bundled slices, as a user's first load
    runs it: every float32 graph runtime's masks and logits pass the float32 bounds (whichever
    is faster here). The decision goes to the test session's folder (see conftest): measured
    here (the test is scheduled first, see conftest), or by a test of this session that loaded
    the model before it (the same code), and read back."""
    predictor = BoxPredictor.from_pretrained("litemedsam", device="cpu")
    choice = predictor.runtime_choice
    assert choice.how in ("measured", "cached")
    assert {"torch fp32", "onnxruntime fp32"} <= set(choice.seconds)
    assert not [label for label in choice.rejected if label.endswith("fp32")], choice.rejected
    assert choice.cpu == describe_cpu().summary()
