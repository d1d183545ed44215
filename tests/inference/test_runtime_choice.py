"""Precision and runtime chosen by the machine: CPU detection, candidates, the self-check's
decision and its cache. CPUs are injected as /proc/cpuinfo text, never read from the host;
timings come from a fake clock, so no test depends on the speed of the machine running it."""

from __future__ import annotations

import json
import threading
import time
import warnings

import pytest
import torch

from fake_self_check import CASES, FakeClock, FakePredictor
from napari_swinlitemedsam.inference import cpu_features, runtime_choice, runtime_choice_store
from napari_swinlitemedsam.inference.cpu_features import describe_cpu, parse_cpuinfo
from napari_swinlitemedsam.inference.embedding_cache import EmbeddingCache
from napari_swinlitemedsam.inference.onnx_encoder import onnx_available
from napari_swinlitemedsam.inference.predictor import BoxPredictor
from napari_swinlitemedsam.inference.runtime_choice import (
    BASELINE,
    Candidate,
    EmulatedBf16Warning,
    candidates_for,
    choose_runtime,
    measure,
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
OPENVINO = Candidate("openvino", "fp32")


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
    with pytest.raises(ValueError, match="precision must be one of"):
        candidates_for("int8", "auto", CPU, parse_cpuinfo(EPYC_AVX2), False)
    with pytest.raises(ValueError, match="runtime"):
        candidates_for("auto", "tensorrt", CPU, parse_cpuinfo(EPYC_AVX2), False)


_SHARED_CLOCK = FakeClock()  # the fake predictors of _choose advance it; measure reads it


def _fake_clock_measure(candidates, make_predictor, cases, **options):
    return measure(candidates, make_predictor, cases, clock=_SHARED_CLOCK, **options)


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


def test_without_a_half_precision_candidate_the_weights_are_never_hashed(tmp_path, monkeypatch):
    """Only a bfloat16/float16 decision is keyed by the weights; where no such candidate
    exists none can be stored, and a deferred check asks for the decision at every step."""
    monkeypatch.setattr(runtime_choice, "measure", _fake_clock_measure)

    def no_hashing(model):
        raise AssertionError("the weights were hashed")

    monkeypatch.setattr(runtime_choice_store, "weights_fingerprint", no_hashing)
    made = []
    first = _choose(_Model(1.0), tmp_path, made, cpuinfo=EPYC_AVX2)
    again = _choose(_Model(1.0), tmp_path, made, cpuinfo=EPYC_AVX2)
    assert (first.how, again.how, len(made)) == ("measured", "cached", 2)
    with pytest.raises(AssertionError, match="hashed"):  # a bf16 candidate: its key has them
        _choose(_Model(1.0), tmp_path / "bf16", [], cpuinfo=SAPPHIRE_RAPIDS)


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
