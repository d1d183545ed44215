"""Cohorts on a real Dask cluster of 2 worker processes on 127.0.0.1 (stand-in model): the same
outputs as one process, one model load per worker, a worker killed mid-case whose case is redone
elsewhere without leftovers, ``--skip-done`` through the cluster, and ``embed`` by slice ranges."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cohort_stub import write_case
from napari_swinlitemedsam.cohort import cluster, worker
from napari_swinlitemedsam.cohort.cases import DONE, SKIPPED, embed_planes, segment_one
from napari_swinlitemedsam.cohort.recipe import PredictorRecipe, SegmentSettings

# Starting the cluster (two processes importing torch) alone takes longer than a fast test
pytestmark = pytest.mark.slow

STUB = PredictorRecipe(model="stub", device="cpu", factory="cohort_stub:make_predictor")


@pytest.fixture(scope="module")
def client():
    """A LocalCluster of 2 worker processes (1 thread each), shared by the tests here."""
    with cluster.connect(cluster.ClusterSpec(local_workers=2)) as dask_client:
        yield dask_client


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    inputs = tmp_path_factory.mktemp("cases")
    for index in range(3):
        write_case(inputs / f"2D_{index}.npz", index)
        write_case(inputs / f"3D_{index}.npz", 10 + index, three_d=True)
    return sorted(inputs.glob("*.npz"))


@pytest.fixture(scope="module")
def single_process(cases, tmp_path_factory):
    """``segs`` of every case segmented in this process, one after another."""
    out = tmp_path_factory.mktemp("single")
    predictor = STUB.build()
    for path in cases:
        assert segment_one(predictor, path, out, SegmentSettings()).status == DONE
    return {path.name: np.load(out / path.name)["segs"] for path in cases}


def run_cohort(client, recipe, cases, out, skip_done=False, threads=1):
    with cluster.predictor_on_workers(client, recipe, threads) as plugin:
        outcomes = list(
            cluster.segment_cases(client, plugin, cases, out, SegmentSettings(), skip_done)
        )
        loads = client.run(worker.model_loads, plugin)
    return {outcome.case: outcome for outcome in outcomes}, loads


def assert_same_outputs(out: Path, expected: dict) -> None:
    for name, segs in expected.items():
        with np.load(out / name) as result:
            # same model, same code, deterministic stand-in: the labels are equal exactly
            np.testing.assert_array_equal(result["segs"], segs, err_msg=name)
    assert not [p.name for p in out.rglob(".*.tmp")], "a partial output survived"


def test_two_workers_give_the_single_process_outputs_and_load_the_model_once(
    client, cases, single_process, tmp_path
):
    outcomes, loads = run_cohort(client, STUB, cases, tmp_path)
    assert {o.status for o in outcomes.values()} == {DONE} and len(outcomes) == len(cases)
    assert_same_outputs(tmp_path, single_process)
    assert sorted(loads.values()) == [1, 1]  # 6 cases, 2 workers, one model each


def test_skip_done_through_the_cluster(client, cases, single_process, tmp_path):
    run_cohort(client, STUB, cases, tmp_path)
    write_case(cases[0].parent / "changed.npz", 99)
    changed = cases + [cases[0].parent / "changed.npz"]
    try:
        outcomes, _ = run_cohort(client, STUB, changed, tmp_path, skip_done=True)
    finally:
        (cases[0].parent / "changed.npz").unlink()
    assert {name for name, o in outcomes.items() if o.status == DONE} == {"changed.npz"}
    assert all(outcomes[path.name].status == SKIPPED for path in cases)


def test_a_model_that_does_not_load_is_one_clear_error(client, tmp_path):
    broken = PredictorRecipe(model=str(tmp_path / "missing.pth"), device="cpu")
    expected = pytest.raises(cluster.ClusterError, match="does not load on the workers")
    with expected, cluster.predictor_on_workers(client, broken, 1):
        pass


def test_embed_spreads_a_volume_by_slice_ranges_and_fills_the_same_cache(client, tmp_path):
    import tifffile

    from napari_swinlitemedsam.cohort.cases import model_planes
    from napari_swinlitemedsam.io.image_files import read_image

    rng = np.random.default_rng(3)
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, rng.integers(0, 4000, (10, 32, 40), dtype=np.uint16))
    here = PredictorRecipe(**{**STUB.__dict__, "cache_folder": str(tmp_path / "here")})
    embed_planes(here.build(), model_planes(read_image(stack)))
    there = PredictorRecipe(**{**STUB.__dict__, "cache_folder": str(tmp_path / "there")})
    with cluster.predictor_on_workers(client, there, 1) as plugin:
        outcomes = list(cluster.embed_images(client, plugin, [stack], slices_per_task=4))
    assert sorted((o.start, o.stop) for o in outcomes) == [(0, 4), (4, 8), (8, 10)]
    assert sum(o.encoded for o in outcomes) == 10 and not any(o.message for o in outcomes)

    def keys(folder):
        return sorted(p.name for p in (tmp_path / folder).glob("??/*.npz"))

    assert len(keys("there")) == 10 and keys("there") == keys("here")


def test_a_worker_killed_mid_case_has_its_case_redone_elsewhere(
    client, cases, single_process, tmp_path
):
    marker = tmp_path / "killed-once"
    dying = PredictorRecipe(
        **{**STUB.__dict__, "options": {"die_once_marker": str(marker)}},
    )
    outcomes, _ = run_cohort(client, dying, cases, tmp_path / "out")
    assert marker.exists(), "no worker was killed: the fault was not injected"
    assert {o.status for o in outcomes.values()} == {DONE}
    assert_same_outputs(tmp_path / "out", single_process)
