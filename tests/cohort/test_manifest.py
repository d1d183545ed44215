"""``segment --skip-done`` bookkeeping, in one process with the stand-in model: a case is done
only when its record matches this input, model and settings and its output is intact."""

from __future__ import annotations

import numpy as np
import pytest

from cohort_stub import write_case
from napari_swinlitemedsam.cohort import manifest
from napari_swinlitemedsam.cohort.cases import DONE, FAILED, SKIPPED, segment_one
from napari_swinlitemedsam.cohort.recipe import (
    PredictorRecipe,
    SegmentSettings,
    torch_threads_per_worker,
)

STUB = PredictorRecipe(model="stub", device="cpu", factory="cohort_stub:make_predictor")


@pytest.fixture(scope="module")
def predictor():
    return STUB.build()


@pytest.fixture
def cohort(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_case(inputs / "2D_a.npz", 1)
    write_case(inputs / "3D_b.npz", 2, three_d=True)
    return inputs, tmp_path / "out"


def run_all(predictor, inputs, out, settings=None, skip_done=True):
    settings = settings or SegmentSettings()
    return {
        path.name: segment_one(predictor, path, out, settings, skip_done).status
        for path in sorted(inputs.glob("*.npz"))
    }


def test_finished_cases_are_skipped_and_changed_inputs_redone(predictor, cohort):
    inputs, out = cohort
    assert run_all(predictor, inputs, out) == {"2D_a.npz": DONE, "3D_b.npz": DONE}
    first = (out / "3D_b.npz").read_bytes()
    assert run_all(predictor, inputs, out) == {"2D_a.npz": SKIPPED, "3D_b.npz": SKIPPED}
    write_case(inputs / "2D_a.npz", 7)  # same name, new pixels
    assert run_all(predictor, inputs, out) == {"2D_a.npz": DONE, "3D_b.npz": SKIPPED}
    assert (out / "3D_b.npz").read_bytes() == first


def test_other_settings_or_model_mean_recompute(predictor, cohort):
    inputs, out = cohort
    run_all(predictor, inputs, out)
    changed = SegmentSettings(stop_when_empty=True)
    assert set(run_all(predictor, inputs, out, changed).values()) == {DONE}
    other_model = PredictorRecipe(model="stub", factory="cohort_stub:make_predictor", options={})
    other = other_model.build()
    other.model.mix.data += 0.25  # other weights: another encoder identity
    assert set(run_all(other, inputs, out, changed).values()) == {DONE}


def test_an_output_without_record_or_changed_since_is_redone(predictor, cohort):
    inputs, out = cohort
    run_all(predictor, inputs, out)
    manifest.record_path(out, "2D_a.npz").unlink()  # stopped between output and record
    data = (out / "3D_b.npz").read_bytes()
    (out / "3D_b.npz").write_bytes(data[: len(data) // 2])  # damaged afterwards
    assert run_all(predictor, inputs, out) == {"2D_a.npz": DONE, "3D_b.npz": DONE}
    with np.load(out / "3D_b.npz") as result:
        assert result["segs"].shape == (5, 40, 48)


def test_without_skip_done_everything_is_redone(predictor, cohort):
    inputs, out = cohort
    run_all(predictor, inputs, out)
    assert set(run_all(predictor, inputs, out, skip_done=False).values()) == {DONE}


def test_a_bad_case_is_one_line_and_leaves_no_record(predictor, tmp_path):
    bad = tmp_path / "2D_bad.npz"
    bad.write_bytes(b"PK\x03\x04 not a zip")
    outcome = segment_one(predictor, bad, tmp_path / "out", SegmentSettings())
    assert outcome.status == FAILED and "2D_bad.npz" in outcome.message
    assert "\n" not in outcome.message and "Traceback" in outcome.detail
    assert manifest.read_record(tmp_path / "out", "2D_bad.npz") is None


def test_leftovers_of_killed_writers_are_removed_only_for_the_given_cases(tmp_path):
    (tmp_path / manifest.MANIFEST_FOLDER).mkdir()
    ours = [tmp_path / ".2D_a.npz.k3j_x9.tmp", tmp_path / ".manifest" / ".2D_a.npz.json.q1.tmp"]
    theirs = tmp_path / ".2D_other.npz.zz.tmp"
    for path in [*ours, theirs]:
        path.write_bytes(b"half")
    assert manifest.remove_partial_outputs(tmp_path, ["2D_a.npz"]) == 2
    assert not any(path.exists() for path in ours) and theirs.exists()


def test_torch_threads_split_the_cores_evenly():
    assert torch_threads_per_worker(2, cores=2) == 1
    assert torch_threads_per_worker(3, cores=16) == 5
    assert torch_threads_per_worker(8, cores=2) == 1
