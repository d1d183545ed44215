"""Score a folder of predictions against a folder of ground truths, as the challenge does.

Ground-truth files hold ``gts`` (label map) and, for 3D cases, ``spacing``; prediction
files hold ``segs``. Files are paired by name. 3D cases are scored in spacing units (mm),
2D cases in pixels; see :mod:`.metrics` for the exact rules.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_swinlitemedsam.evaluation.metrics import case_scores
from napari_swinlitemedsam.io.challenge_io import ChallengeFileError, read_npz_arrays


@dataclass(frozen=True)
class CaseResult:
    """Scores of one ground-truth case.

    ``status``: ``"ok"`` (scored), ``"missing"`` (no prediction file) or ``"unusable"``
    (unreadable or mismatched prediction); the last two score DSC 0 and NSD 0. ``note``
    says what went wrong, or is empty.
    """

    case: str
    dsc: float
    nsd: float
    status: str = "ok"
    note: str = ""


@dataclass(frozen=True)
class EvaluationResult:
    """All case rows (sorted by case file name) and the means over them.

    ``mean_dsc`` / ``mean_nsd`` average every row, unscored rows counting as 0; rows whose
    value is NaN (a ground truth without labels, or a label number unused by both masks) are
    left out of the mean. ``missing``: cases without a prediction file. ``failed``: case ->
    reason, for unreadable or mismatched files. ``unmatched_predictions``: prediction files
    with no ground truth (ignored).
    """

    rows: list[CaseResult]
    mean_dsc: float
    mean_nsd: float
    missing: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    unmatched_predictions: list[str] = field(default_factory=list)


def _read_ground_truth(gt_path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """``gts`` and, for 3D, the spacing to score with (None: voxels). Raises ChallengeFileError."""
    arrays = read_npz_arrays(gt_path, required=("gts",), optional=("spacing",))
    gts = arrays["gts"]
    if gts.dtype.kind not in "iub" or gts.ndim not in (2, 3):
        raise ChallengeFileError(
            f"{gt_path}: 'gts' must be an integer (H, W) or (D, H, W) label map; "
            f"got {gts.dtype} {gts.shape}"
        )
    spacing = arrays.get("spacing")
    if gts.ndim == 2 or spacing is None:
        return gts, None
    values = np.asarray(spacing).reshape(-1)
    if (
        values.dtype.kind not in "iuf"
        or values.size != 3
        or not np.all(np.isfinite(values))
        or np.any(values <= 0)
    ):
        raise ChallengeFileError(
            f"{gt_path}: 'spacing' must be 3 positive numbers; got {spacing!r}"
        )
    return gts, values.astype(np.float64)


def _score_case(pred_path: Path, gt_path: Path) -> CaseResult:
    """Score one pair of files; prediction problems become an unscored row with a note."""
    name = gt_path.name
    gts, spacing = _read_ground_truth(gt_path)
    note = (
        "no spacing in ground truth; scored in voxels" if gts.ndim == 3 and spacing is None else ""
    )
    if not pred_path.is_file():
        return CaseResult(name, 0.0, 0.0, "missing", "missing prediction")
    try:
        segs = read_npz_arrays(pred_path, required=("segs",))["segs"]
        if segs.dtype.kind not in "iub":
            raise ValueError(f"prediction 'segs' must hold integer labels; got {segs.dtype}")
        if segs.shape != gts.shape:
            raise ValueError(f"prediction shape {segs.shape} != ground truth shape {gts.shape}")
        scores = case_scores(segs, gts, spacing)
    except (ChallengeFileError, ValueError) as error:
        return CaseResult(name, 0.0, 0.0, "unusable", f"unusable prediction: {error}")
    return CaseResult(name, scores["dsc"], scores["nsd"], "ok", note)


def evaluate_folder(
    pred_dir: str | os.PathLike,
    gt_dir: str | os.PathLike,
    csv_path: str | os.PathLike | None = None,
) -> EvaluationResult:
    """Score every ground-truth ``*.npz`` in ``gt_dir`` against the same-named file in
    ``pred_dir``; optionally write a CSV with columns ``case, dsc, nsd`` (4 decimals).

    A missing or unusable prediction scores 0 and is listed, never raised. An unreadable
    ground-truth file is listed in ``failed`` and left out. Raises ``ChallengeFileError``
    when a folder does not exist.
    """
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    for folder, role in ((pred_dir, "prediction"), (gt_dir, "ground-truth")):
        if not folder.is_dir():
            raise ChallengeFileError(f"{folder}: {role} folder does not exist")
    gt_paths = sorted(p for p in gt_dir.glob("*.npz") if p.is_file())
    rows: list[CaseResult] = []
    failed: dict[str, str] = {}
    for gt_path in gt_paths:
        try:
            row = _score_case(pred_dir / gt_path.name, gt_path)
        except ChallengeFileError as error:
            failed[gt_path.name] = f"unreadable ground truth: {error}"
            continue
        rows.append(row)
        if row.status == "unusable":
            failed[row.case] = row.note
    gt_names = {p.name for p in gt_paths}
    unmatched = sorted(p.name for p in pred_dir.glob("*.npz") if p.name not in gt_names)
    result = EvaluationResult(
        rows=rows,
        mean_dsc=_mean_ignoring_nan([r.dsc for r in rows]),
        mean_nsd=_mean_ignoring_nan([r.nsd for r in rows]),
        missing=[r.case for r in rows if r.status == "missing"],
        failed=failed,
        unmatched_predictions=unmatched,
    )
    if csv_path is not None:
        write_scores_csv(csv_path, rows)
    return result


def _mean_ignoring_nan(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return float(np.mean(kept)) if kept else float("nan")


def write_scores_csv(csv_path: str | os.PathLike, rows: list[CaseResult]) -> Path:
    """Write ``case,dsc,nsd`` rows (values rounded to 4 decimals, NaN as ``nan``)."""
    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with open(csv_path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["case", "dsc", "nsd"])
        for row in rows:
            writer.writerow([row.case, f"{row.dsc:.4f}", f"{row.nsd:.4f}"])
    return csv_path


def format_table(result: EvaluationResult) -> str:
    """Human-readable per-case table, the means, and the problems found."""
    width = max([len("case")] + [len(r.case) for r in result.rows])
    lines = [f"{'case':<{width}}  {'DSC':>6}  {'NSD':>6}  note"]
    for row in result.rows:
        remark = row.note if row.status == "ok" else row.status
        lines.append(f"{row.case:<{width}}  {row.dsc:>6.4f}  {row.nsd:>6.4f}  {remark}".rstrip())
    lines.append(f"{'mean':<{width}}  {result.mean_dsc:>6.4f}  {result.mean_nsd:>6.4f}")
    lines.append(f"{len(result.rows)} case(s)")
    if result.missing:
        lines.append(
            f"{len(result.missing)} prediction(s) missing, scored 0: " + ", ".join(result.missing)
        )
    for case, reason in result.failed.items():
        lines.append(f"problem with {case}: {reason}")
    if result.unmatched_predictions:
        lines.append(
            "prediction(s) without ground truth, ignored: "
            + ", ".join(result.unmatched_predictions)
        )
    return "\n".join(lines)


def run_evaluate(
    pred_dir: str | os.PathLike,
    gt_dir: str | os.PathLike,
    csv_path: str | os.PathLike | None = None,
) -> int:
    """Evaluate, print the per-case table and the means, and return an exit code.

    0: every ground-truth case had a usable prediction. 1: some predictions were missing or
    unusable, or a ground truth was unreadable (all listed; scores are still printed).
    2: a folder does not exist or holds no ground-truth ``.npz`` files.
    """
    try:
        result = evaluate_folder(pred_dir, gt_dir, csv_path)
    except ChallengeFileError as error:
        print(f"error: {error}")
        return 2
    if not result.rows and not result.failed:
        print(f"error: no ground-truth .npz files in {gt_dir}")
        return 2
    print(format_table(result))
    if csv_path is not None:
        print(f"scores written to {csv_path}")
    return 1 if (result.missing or result.failed) else 0
