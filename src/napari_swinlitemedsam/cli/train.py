"""``swinlitemedsam train ...``: build data, distil Swin-LiteMedSAM, evaluate, fine-tune.

Subcommands:

* ``build-data OUT`` — the offline training and held-out sets (:mod:`.data_builder`);
* ``distill --data DIR --work-dir DIR`` — the three-stage recipe, resumable (:mod:`.distill`);
* ``evaluate --heldout DIR --model NAME_OR_PATH`` — held-out DSC/NSD of any model;
* ``finetune --model NAME_OR_PATH --data FILES --name NAME`` — learn from label maps and save
  into the user model folder (:mod:`.finetune`).

This module imports nothing heavy at import time, so building the parser stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_train_arguments(subparsers) -> argparse.ArgumentParser:
    """Add the ``train`` command (with its subcommands) to an ``add_subparsers()`` object."""
    train = subparsers.add_parser("train", help="build training data, distil, evaluate, fine-tune")
    commands = train.add_subparsers(dest="train_command", required=True)

    build = commands.add_parser("build-data", help="write the offline training and held-out sets")
    build.add_argument("output", help="folder for train/, heldout/ and manifest.json")
    build.add_argument(
        "--sources",
        nargs="+",
        default=None,
        help="sources to use (default: all: nuclei2d nuclei3d brain_mr coins)",
    )
    build.add_argument(
        "--tiles",
        type=int,
        default=None,
        metavar="PX",
        help="also cut the 2D parts into PX x PX tiles (train_tiles/, heldout_tiles/)",
    )

    distill = commands.add_parser(
        "distill", help="distil Swin-LiteMedSAM from LiteMedSAM (resumable)"
    )
    distill.add_argument(
        "--data", required=True, help="folder made by build-data (train/ and heldout/)"
    )
    distill.add_argument(
        "--work-dir", required=True, help="checkpoints, logs, results and the exported model"
    )
    for stage, steps in (("distill", 100), ("decoder", 100), ("joint", 20)):
        distill.add_argument(
            f"--steps-{stage}",
            type=int,
            default=steps,
            help=f"optimiser steps of the {stage} stage (default {steps}; 0 skips it)",
        )
        distill.add_argument(
            f"--lr-{stage}", type=float, default=None, help=f"peak learning rate of {stage}"
        )
    distill.add_argument("--images-per-step", type=int, default=1)
    distill.add_argument("--objects-per-image", type=int, default=4)
    distill.add_argument(
        "--skip-path",
        choices=("scratch", "emulate"),
        default="scratch",
        help="decoder skip path: random (published recipe) or set to reproduce "
        "the teacher's upscaling (default: scratch)",
    )
    distill.add_argument(
        "--joint-distill-weight",
        type=float,
        default=1.0,
        help="weight of the feature loss kept in the joint stage (default 1)",
    )
    distill.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="stop after this many minutes; run again to continue",
    )
    distill.add_argument("--no-eval", action="store_true", help="skip the held-out evaluations")
    distill.add_argument(
        "--install",
        action="store_true",
        help="when finished, copy the exported model into the user model folder "
        "(then --model swin-litemedsam-distilled loads it)",
    )
    _add_common(distill)
    distill.add_argument("--bf16", action="store_true", help="train in bfloat16 autocast")

    evaluate = commands.add_parser("evaluate", help="held-out DSC/NSD of a model")
    evaluate.add_argument(
        "--heldout", required=True, help="folder of challenge .npz files with gts"
    )
    evaluate.add_argument("--model", default="litemedsam", help="model name or .pth path")
    evaluate.add_argument("--json", default=None, help="also write the figures to this JSON file")
    _add_common(evaluate)

    tune = commands.add_parser(
        "finetune", help="fine-tune a model on label maps; save it as a user model"
    )
    tune.add_argument(
        "--model", default="litemedsam", help="model to start from (name or .pth path)"
    )
    tune.add_argument(
        "--data",
        nargs="+",
        required=True,
        help="challenge .npz files (imgs + gts) or folders of them",
    )
    tune.add_argument("--name", required=True, help="name of the new model (file <name>.pth)")
    tune.add_argument("--steps", type=int, default=100)
    tune.add_argument("--lr", type=float, default=None)
    tune.add_argument("--objects-per-image", type=int, default=4)
    tune.add_argument("--train-encoder", action="store_true", help="also train the image encoder")
    tune.add_argument(
        "--heldout", default=None, help="score the model before and after on this folder"
    )
    tune.add_argument(
        "--model-dir", default=None, help="where to save (default: the user model folder)"
    )
    tune.add_argument("--overwrite", action="store_true")
    _add_common(tune)
    return train


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default auto)")
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads for torch (default: torch's)"
    )
    parser.add_argument("--seed", type=int, default=0)


def _set_threads(args) -> None:
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def _npz_files(inputs: list[str]) -> list[Path]:
    from napari_swinlitemedsam.training.dataset import training_files

    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        files.extend(training_files(path) if path.is_dir() else [path])
    return files


def _run_build(args) -> int:
    from napari_swinlitemedsam.training.data_builder import AVAILABLE_SOURCES, build_training_data

    sources = tuple(args.sources) if args.sources else AVAILABLE_SOURCES
    manifest = build_training_data(args.output, sources, tile_size=args.tiles)
    for entry in manifest["files"]:
        print(f"{entry['file']}: {entry['shape']} ({entry['crop']})")
    print(f"wrote {len(manifest['files'])} files and manifest.json to {args.output}")
    return 0


def _run_distill(args) -> int:
    from napari_swinlitemedsam.training.distill import (
        DEFAULT_LR,
        DistillationPlan,
        run_distillation,
    )

    stages = ("distill", "decoder", "joint")
    plan = DistillationPlan(
        steps={s: getattr(args, f"steps_{s}") for s in stages},
        lr={s: getattr(args, f"lr_{s}") or DEFAULT_LR[s] for s in stages},
        images_per_step=args.images_per_step,
        objects_per_image=args.objects_per_image,
        skip_path=args.skip_path,
        joint_distill_weight=args.joint_distill_weight,
        bf16=args.bf16,
        seed=args.seed,
        device=args.device,
        evaluate=not args.no_eval,
        max_minutes=args.minutes,
    )
    results = run_distillation(args.data, args.work_dir, plan)
    if not results.get("finished"):
        return 3
    if args.install:
        from napari_swinlitemedsam.training.distill import install_distilled

        print(f"installed {install_distilled(args.work_dir)}")
    return 0


def _run_evaluate(args) -> int:
    from napari_swinlitemedsam.model.checkpoint import load_model
    from napari_swinlitemedsam.training.evaluate import evaluate_model, heldout_cases

    loaded = load_model(args.model, device=args.device)
    cases = heldout_cases(args.heldout)
    summary = evaluate_model(loaded.model, loaded.spec.prompts, cases, loaded.spec.name)
    print(
        f"{args.model}: DSC {summary['dsc']:.4f}  NSD {summary['nsd']:.4f}  "
        f"({summary['cases']} frames)"
    )
    for source, figures in summary["per_source"].items():
        print(
            f"  {source}: DSC {figures['dsc']:.4f}  NSD {figures['nsd']:.4f}  "
            f"({figures['cases']} frames)"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2, default=float))
    return 0


def _run_finetune(args) -> int:
    import numpy as np
    from tqdm import tqdm

    from napari_swinlitemedsam.inference.generators import run_to_end
    from napari_swinlitemedsam.model.checkpoint import load_model
    from napari_swinlitemedsam.training.evaluate import evaluate_model, heldout_cases
    from napari_swinlitemedsam.training.finetune import finetune, save_finetuned

    loaded = load_model(args.model, device=args.device)
    images, labels = [], []
    for path in _npz_files(args.data):
        with np.load(path, allow_pickle=False) as archive:
            images.append(archive["imgs"])
            labels.append(archive["gts"])
    card = {
        "base_model": str(args.model),
        "steps": args.steps,
        "train_encoder": args.train_encoder,
        "images": len(images),
        "data": [str(p) for p in _npz_files(args.data)],
        "seed": args.seed,
    }
    cases = heldout_cases(args.heldout) if args.heldout else []
    if cases:
        before = evaluate_model(loaded.model, loaded.spec.prompts, cases)
        print(f"held-out before: DSC {before['dsc']:.4f}  NSD {before['nsd']:.4f}")
        card["heldout_before"] = {"dsc": round(before["dsc"], 4), "nsd": round(before["nsd"], 4)}
    steps = finetune(
        loaded.model,
        images,
        labels,
        steps=args.steps,
        train_encoder=args.train_encoder,
        lr=args.lr,
        objects_per_image=args.objects_per_image,
        seed=args.seed,
        prompts=loaded.spec.prompts,
    )
    losses = []
    with tqdm(total=args.steps, desc="fine-tune", unit="step") as bar:

        def show(progress) -> None:
            losses.append(progress.loss)
            bar.update(1)
            bar.set_postfix(loss=f"{progress.loss:.4f}")

        tuned = run_to_end(steps, show)
    card["loss_first_10_mean"] = round(float(np.mean(losses[:10])), 4)
    card["loss_last_10_mean"] = round(float(np.mean(losses[-10:])), 4)
    if cases:
        after = evaluate_model(tuned, loaded.spec.prompts, cases)
        print(f"held-out after:  DSC {after['dsc']:.4f}  NSD {after['nsd']:.4f}")
        card["heldout_after"] = {"dsc": round(after["dsc"], 4), "nsd": round(after["nsd"], 4)}
        card["heldout"] = str(args.heldout)
    path = save_finetuned(
        tuned,
        args.name,
        card,
        model_dir=Path(args.model_dir) if args.model_dir else None,
        overwrite=args.overwrite,
    )
    print(f"saved {path} (model card beside it)")
    return 0


def run_train(args: argparse.Namespace) -> int:
    """Run the ``train`` subcommand parsed by :func:`add_train_arguments`; returns an exit code."""
    from napari_swinlitemedsam.model.checkpoint import CheckpointError
    from napari_swinlitemedsam.training.dataset import TrainingDataError
    from napari_swinlitemedsam.training.finetune import FinetuneError

    _set_threads(args)
    handlers = {
        "build-data": _run_build,
        "distill": _run_distill,
        "evaluate": _run_evaluate,
        "finetune": _run_finetune,
    }
    try:
        return handlers[args.train_command](args)
    except (CheckpointError, TrainingDataError, FinetuneError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
