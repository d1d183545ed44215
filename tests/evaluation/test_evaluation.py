"""Folder evaluation: pairing by name, spacing for 3D, missing and broken predictions."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from napari_swinlitemedsam.evaluation.folder_scores import evaluate_folder, run_evaluate
from napari_swinlitemedsam.evaluation.metrics import case_scores
from napari_swinlitemedsam.io.challenge_io import ChallengeFileError


def square(side: int, left: int) -> np.ndarray:
    mask = np.zeros((30, 40), np.uint8)
    mask[5 : 5 + side, left : left + side] = 1
    return mask


def volume_box(first_slice: int) -> np.ndarray:
    mask = np.zeros((10, 11, 12), np.uint8)
    mask[first_slice : first_slice + 4, 3:8, 3:9] = 1
    return mask


@pytest.fixture
def folders(tmp_path):
    gt_dir, pred_dir = tmp_path / "gts", tmp_path / "segs"
    gt_dir.mkdir()
    pred_dir.mkdir()
    np.savez(gt_dir / "2DBox_a.npz", gts=square(10, 5), imgs=np.zeros((30, 40, 3), np.uint8))
    np.savez(pred_dir / "2DBox_a.npz", segs=square(10, 8))
    spacing = np.array([3.0, 2.5, 2.5])
    np.savez(gt_dir / "3DBox_b.npz", gts=volume_box(2), spacing=spacing)
    np.savez(pred_dir / "3DBox_b.npz", segs=volume_box(3))
    np.savez(gt_dir / "2DBox_c.npz", gts=square(6, 1))  # no prediction
    np.savez(pred_dir / "2DBox_orphan.npz", segs=square(6, 1))
    return pred_dir, gt_dir


def test_scores_match_case_scores_and_use_spacing_for_3d(folders, tmp_path):
    pred_dir, gt_dir = folders
    csv_path = tmp_path / "report" / "metrics.csv"
    result = evaluate_folder(pred_dir, gt_dir, csv_path)
    rows = {row.case: row for row in result.rows}
    assert list(rows) == ["2DBox_a.npz", "2DBox_c.npz", "3DBox_b.npz"]
    expected_a = case_scores(square(10, 8), square(10, 5))
    expected_b = case_scores(volume_box(3), volume_box(2), (3.0, 2.5, 2.5))
    assert rows["2DBox_a.npz"].dsc == pytest.approx(expected_a["dsc"])
    assert rows["2DBox_a.npz"].nsd == pytest.approx(expected_a["nsd"])
    assert rows["3DBox_b.npz"].nsd == pytest.approx(expected_b["nsd"])
    assert rows["3DBox_b.npz"].nsd < case_scores(volume_box(3), volume_box(2))["nsd"]
    assert rows["2DBox_c.npz"].status == "missing"
    assert (rows["2DBox_c.npz"].dsc, rows["2DBox_c.npz"].nsd) == (0.0, 0.0)
    assert result.missing == ["2DBox_c.npz"]
    assert result.unmatched_predictions == ["2DBox_orphan.npz"]
    assert result.mean_dsc == pytest.approx((expected_a["dsc"] + expected_b["dsc"] + 0) / 3)
    assert result.mean_nsd == pytest.approx((expected_a["nsd"] + expected_b["nsd"] + 0) / 3)

    with open(csv_path, newline="") as stream:
        table = list(csv.reader(stream))
    assert table[0] == ["case", "dsc", "nsd"]
    assert [r[0] for r in table[1:]] == list(rows)
    assert table[1][1] == f"{expected_a['dsc']:.4f}"


def test_unusable_prediction_is_scored_zero_and_listed(folders):
    pred_dir, gt_dir = folders
    (pred_dir / "2DBox_a.npz").write_bytes(b"garbage")
    np.savez(pred_dir / "3DBox_b.npz", segs=np.zeros((2, 2), np.uint8))
    result = evaluate_folder(pred_dir, gt_dir)
    rows = {row.case: row for row in result.rows}
    assert rows["2DBox_a.npz"].status == "unusable" and rows["2DBox_a.npz"].dsc == 0.0
    assert "shape" in result.failed["3DBox_b.npz"]
    assert set(result.failed) == {"2DBox_a.npz", "3DBox_b.npz"}


def test_unreadable_ground_truth_is_listed_not_raised(folders):
    pred_dir, gt_dir = folders
    (gt_dir / "2DBox_a.npz").write_bytes(b"")
    result = evaluate_folder(pred_dir, gt_dir)
    assert "2DBox_a.npz" in result.failed
    assert "2DBox_a.npz" not in {row.case for row in result.rows}


def test_empty_ground_truth_is_nan_and_left_out_of_the_mean(tmp_path):
    gt_dir, pred_dir = tmp_path / "g", tmp_path / "p"
    gt_dir.mkdir()
    pred_dir.mkdir()
    np.savez(gt_dir / "2D_empty.npz", gts=np.zeros((5, 5), np.uint8))
    np.savez(pred_dir / "2D_empty.npz", segs=np.zeros((5, 5), np.uint8))
    np.savez(gt_dir / "2D_full.npz", gts=square(4, 2))
    np.savez(pred_dir / "2D_full.npz", segs=square(4, 2))
    result = evaluate_folder(pred_dir, gt_dir)
    assert math.isnan(result.rows[0].dsc)
    assert result.mean_dsc == 1.0 and result.mean_nsd == pytest.approx(0.5)


def test_missing_folder_raises(tmp_path):
    with pytest.raises(ChallengeFileError, match="folder does not exist"):
        evaluate_folder(tmp_path / "nope", tmp_path)


def test_run_evaluate_prints_table_and_returns_exit_codes(folders, tmp_path, capsys):
    pred_dir, gt_dir = folders
    assert run_evaluate(pred_dir, gt_dir, tmp_path / "m.csv") == 1  # one prediction missing
    out = capsys.readouterr().out
    assert "2DBox_a.npz" in out and "mean" in out and "missing" in out
    assert (tmp_path / "m.csv").is_file()

    np.savez(pred_dir / "2DBox_c.npz", segs=square(6, 1))
    assert run_evaluate(pred_dir, gt_dir, None) == 0
    assert run_evaluate(tmp_path / "nope", gt_dir, None) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_evaluate(pred_dir, empty, None) == 2
    assert "no ground-truth" in capsys.readouterr().out
