"""The whole recipe: Swin-LiteMedSAM distilled from LiteMedSAM, resumable, with held-out figures.

:func:`run_distillation` works in one folder (``work_dir``):

* ``init.pt`` and ``init.json``: the student as initialised from the teacher (:mod:`.transplant`)
  and the report of what was initialised how;
* ``distill/``, ``decoder/``, ``joint/``: each stage's ``state.pt`` (resumable) and ``log.csv``;
* ``teacher_cache/``: the teacher's targets per view (:mod:`.teacher_cache`);
* ``results.json``: held-out DSC/NSD of the teacher and of the student after initialisation and
  after each stage (each figure computed once and kept when the run resumes);
* ``swin_litemedsam_distilled.pth``: the final student in float16, with its sha256 in
  ``results.json`` and in ``swin_litemedsam_distilled.pth.sha256``;
  :func:`install_distilled` copies both into the user model folder, where
  ``load_model("swin-litemedsam-distilled")`` finds them and checks the hash.

Running it again continues where it stopped (a stage that finished is not repeated; a stage
interrupted by the time budget or a crash resumes from its last checkpoint).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from napari_swinlitemedsam.model.checkpoint import (
    DISTILLED_FILENAME,
    default_model_dir,
    load_model,
    save_torch_atomically,
    sha256_of,
)
from napari_swinlitemedsam.model.registry import (
    PROMPTS_BOX,
    PROMPTS_BOX_POINTS_SCRIBBLE,
    build_swin_litemedsam,
)
from napari_swinlitemedsam.training.dataset import FrameSet
from napari_swinlitemedsam.training.evaluate import (
    evaluate_model,
    evaluate_teacher,
    feature_closeness,
    heldout_cases,
    teacher_decoder_on_student,
)
from napari_swinlitemedsam.training.stages import STAGES, StageRunner, StageSettings
from napari_swinlitemedsam.training.teacher_cache import TeacherCache
from napari_swinlitemedsam.training.transplant import initialise_from_teacher

EXPORT_NAME = DISTILLED_FILENAME
DEFAULT_LR = {"distill": 2e-4, "decoder": 1e-4, "joint": 5e-5}


@dataclass
class DistillationPlan:
    """How much of each stage to run, and how.

    Attributes:
        steps: optimiser steps per stage (0 skips a stage).
        lr: peak learning rate per stage.
        images_per_step, objects_per_image: batch size (images; objects decoded per image).
        skip_path: ``"scratch"`` or ``"emulate"`` (see :mod:`.transplant`).
        calibration_frames: training frames used for the least-squares mergings.
        joint_distill_weight: weight of the feature loss added in the joint stage.
        bf16: autocast to bfloat16.
        seed: the run's seed.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        evaluate: compute held-out figures after each stage.
        max_minutes: stop (resumably) after this much time in this call.
    """

    steps: dict[str, int] = field(
        default_factory=lambda: {"distill": 100, "decoder": 80, "joint": 20}
    )
    lr: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_LR))
    images_per_step: int = 1
    objects_per_image: int = 4
    skip_path: str = "scratch"
    calibration_frames: int = 8
    joint_distill_weight: float = 1.0
    bf16: bool = False
    seed: int = 0
    device: str = "auto"
    evaluate: bool = True
    max_minutes: float | None = None


def export_half(model: torch.nn.Module, path: Path) -> str:
    """Save ``{"model": state dict in float16}`` atomically, and its sha256 in ``<path>.sha256``;
    returns the sha256."""
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    save_torch_atomically({"model": state}, path)
    digest = sha256_of(path)
    path.with_name(path.name + ".sha256").write_text(f"{digest}  {path.name}\n")
    return digest


def install_distilled(
    work_dir: str | os.PathLike, model_dir: str | os.PathLike | None = None
) -> Path:
    """Copy the exported weights and their ``.sha256`` into the user model folder; returns the
    installed path (loadable as ``"swin-litemedsam-distilled"``)."""
    import shutil

    source = Path(work_dir) / EXPORT_NAME
    digest = source.with_name(source.name + ".sha256")
    if not source.is_file() or not digest.is_file():
        raise FileNotFoundError(
            f"{source} (and its .sha256) not found: finish the distillation first"
        )
    folder = Path(model_dir) if model_dir is not None else default_model_dir()
    folder.mkdir(parents=True, exist_ok=True)
    for item in (source, digest):
        temporary = folder / f".{item.name}.tmp-{os.getpid()}"
        shutil.copyfile(item, temporary)
        os.replace(temporary, folder / item.name)
    return folder / EXPORT_NAME


class _Results:
    """``results.json``, rewritten after every change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = json.loads(path.read_text()) if path.is_file() else {}

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def __setitem__(self, key: str, value) -> None:
        self.data[key] = value
        temporary = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        temporary.write_text(json.dumps(self.data, indent=2, default=float))
        os.replace(temporary, self.path)


def _without_cases(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k != "per_case"}


def prepare_student(work_dir: Path, teacher, frames: FrameSet, plan: DistillationPlan):
    """The initialised student (read from ``init.pt`` when a previous run made it)."""
    student = build_swin_litemedsam()
    init_path = work_dir / "init.pt"
    if init_path.is_file():
        student.load_state_dict(
            torch.load(init_path, map_location="cpu", weights_only=True)["model"]
        )
        return student
    rng = np.random.default_rng([plan.seed, 5])
    count = min(plan.calibration_frames, len(frames))
    chosen = rng.choice(len(frames), size=count, replace=False, p=frames.balanced_weights())
    calibration = torch.stack([torch.from_numpy(frames.prepared(int(i))[0]) for i in chosen])
    report = initialise_from_teacher(student, teacher, calibration, skip_path=plan.skip_path)
    (work_dir / "init.json").write_text(
        json.dumps(
            {
                "summary": report.summary(len(student.state_dict())),
                "skip_path": plan.skip_path,
                **report.as_dict(),
            },
            indent=2,
        )
    )
    save_torch_atomically({"model": student.state_dict()}, init_path)
    return student


def run_distillation(
    data_dir: str | os.PathLike,
    work_dir: str | os.PathLike,
    plan: DistillationPlan,
    say: Callable[[str], None] = print,
    show_progress: bool = True,
) -> dict:
    """Run (or continue) the recipe; returns the results dict (also in ``results.json``).

    ``data_dir`` holds ``train/`` and ``heldout/`` (see :mod:`.data_builder`). The returned
    dict has ``"finished": True`` once every stage is done and the model exported.
    """
    started = time.perf_counter()
    data_dir, work_dir = Path(data_dir), Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    results = _Results(work_dir / "results.json")
    results["plan"] = asdict(plan)
    loaded = load_model("litemedsam", device=plan.device)
    teacher, device = loaded.model.eval(), loaded.device
    frames = FrameSet.from_folder(data_dir / "train")
    say(f"{len(frames)} training frames from {data_dir / 'train'}; device {device}")
    cases = heldout_cases(data_dir / "heldout") if plan.evaluate else []

    def evaluate(key: str, model, hybrid: bool) -> None:
        if not plan.evaluate or key in results:
            return
        entry = {
            "student": _without_cases(evaluate_model(model, PROMPTS_BOX_POINTS_SCRIBBLE, cases))
        }
        if hybrid:
            entry["student_encoder_teacher_decoder"] = _without_cases(
                evaluate_model(teacher_decoder_on_student(model, teacher), PROMPTS_BOX, cases)
            )
            entry["feature_l1"] = feature_closeness(model, teacher, cases[::3])
        results[key] = entry
        say(
            f"held-out after {key}: student DSC {entry['student']['dsc']:.4f} "
            f"NSD {entry['student']['nsd']:.4f}"
            + (
                "; with the teacher's decoder DSC "
                f"{entry['student_encoder_teacher_decoder']['dsc']:.4f}"
                if hybrid
                else ""
            )
        )

    if plan.evaluate and "teacher" not in results:
        results["teacher"] = _without_cases(evaluate_teacher(teacher, cases))
        say(
            f"held-out teacher (LiteMedSAM): DSC {results.data['teacher']['dsc']:.4f} "
            f"NSD {results.data['teacher']['nsd']:.4f} on {len(cases)} frames"
        )
    student = prepare_student(work_dir, teacher, frames, plan).to(device)
    evaluate("init", student, hybrid=True)
    cache = TeacherCache(teacher.image_encoder, work_dir / "teacher_cache", device)
    for stage in STAGES:
        steps = plan.steps.get(stage, 0)
        if steps <= 0:
            continue
        settings = StageSettings(
            stage=stage,
            steps=steps,
            lr=plan.lr.get(stage, DEFAULT_LR[stage]),
            images_per_step=plan.images_per_step,
            objects_per_image=plan.objects_per_image,
            seed=plan.seed,
            bf16=plan.bf16,
            distill_weight=plan.joint_distill_weight if stage == "joint" else 0.0,
        )
        runner = StageRunner(
            student,
            settings,
            frames,
            work_dir / stage,
            teacher=cache,
            device=device,
            feature_cache_bytes=1 << 30,
        )
        if runner.resume():
            say(f"{stage}: resumed at step {runner.step} of {steps}")
        remaining = None
        if plan.max_minutes is not None:
            remaining = plan.max_minutes * 60 - (time.perf_counter() - started)
            if remaining <= 0 and runner.step < steps:
                say("time budget used up; run the same command again to continue")
                return {**results.data, "finished": False}
        result = runner.run(max_seconds=remaining, show_progress=show_progress)
        if not result.finished:
            say(
                f"{stage}: stopped at step {result.steps_done} of {steps} (time budget); "
                "run the same command again to continue"
            )
            return {**results.data, "finished": False}
        say(
            f"{stage}: done ({steps} steps); teacher cache {cache.hits} hits, {cache.misses} misses"
        )
        evaluate(stage, student, hybrid=stage == "distill")
    export_path = work_dir / EXPORT_NAME
    results["export"] = {
        "file": EXPORT_NAME,
        "sha256": export_half(student, export_path),
        "bytes": export_path.stat().st_size,
    }
    say(f"exported {export_path} (float16, sha256 {results.data['export']['sha256']})")
    return {**results.data, "finished": True}
