"""The benchmark suite's short mode, volume sections: the multi-object 3D case, the pipelined
propagation and the memory probe; our schedules give the reference-style labels.

Nothing here asserts a speed: the checks are that every section produces its figures and that
our pipeline gives the labels of the reference-style schedule of the same model (within float32
rounding, ``tolerances.MIN_OBJECT_DSC``: a flipped pixel may move the box carried to the next
slice by one pixel). The per-slice sections are in ``test_quick_run_slices.py``.
"""

from __future__ import annotations

import pytest

from tolerances import MIN_OBJECT_DSC

SECTIONS = ("volume", "pipeline", "memory")


@pytest.fixture(scope="module")
def quick_run(bench):
    return bench.run(quick=True, sections=SECTIONS)


@pytest.mark.slow
def test_every_section_reports(quick_run, bench):
    rows, figures = quick_run
    assert {row.section.split()[0] for row in rows} == {"3", "3b", "5"}
    assert bench.markdown_table(rows).count("\n") == len(rows) + 1


@pytest.mark.slow
def test_volume_labels_agree_with_reference_style(quick_run):
    _, figures = quick_run
    native_bf16 = bool(figures["machine"]["native_bf16"])
    for name in ("swin-litemedsam", "litemedsam"):
        volume = figures["volume"][name]
        assert volume["agreement"]["min_object_dsc"] >= MIN_OBJECT_DSC, (name, volume)
        # two objects on every slice of the short stack: reference re-encodes per object
        assert volume["encodes_reference"] == 2 * volume["encodes_ours"]
        # quick mode runs bf16 only where bfloat16 is native (see run_benchmarks)
        assert ("bf16" in volume) == native_bf16
        if native_bf16:
            assert volume["bf16"]["agreement"] > 0.9


@pytest.mark.slow
def test_pipelined_labels_agree_with_reference_style(quick_run):
    _, figures = quick_run
    assert set(figures["pipeline"]) == {"cpu", "litemedsam"}  # quick mode: the default model
    variants = figures["pipeline"]["litemedsam"]
    assert {"one encode per slice", "pipelined"} <= set(variants)
    # exactly one row is marked as segment_volume's default on this machine
    assert sum(bool(numbers["default"]) for numbers in variants.values()) == 1
    # quick mode: compared with the one encode per slice schedule, which the volume section
    # compares with the reference style
    for label, numbers in variants.items():
        assert numbers["compared_with"] == "one encode per slice"
        assert numbers["min_object_dsc"] >= MIN_OBJECT_DSC, (label, numbers)
    assert "reference-style" not in variants


@pytest.mark.slow
def test_memory_probe_stays_within_cache_budget(quick_run):
    _, figures = quick_run
    (result,) = figures["memory"].values()
    assert 0 < result["cache_bytes"] <= result["cache_budget_bytes"]
    assert result["peak_rss"] >= result["rss_after_model"] > 0
