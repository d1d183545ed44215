"""The ``swinlitemedsam`` command line.

Subcommands:

* ``segment INPUT... -o OUTDIR`` — challenge ``.npz`` cases (files or folders) to ``segs``;
* ``embed INPUT... --cache DIR`` — encode images and stacks ahead of time into a disk cache;
* ``evaluate PRED_DIR GT_DIR`` — DSC and NSD as the challenge computes them;
* ``demo`` — segment a bundled real sample with the bundled model and score it;
* ``annotate`` — open napari with the plugin docked (on a sample or on files; with ``-o OUTDIR``,
  the files or folders as an image series labelled into OUTDIR, resumable);
* ``models`` — list the models (bundled, installed, missing) and download Swin-LiteMedSAM;
* ``train`` — build training data, distil Swin-LiteMedSAM, evaluate, fine-tune (see
  ``docs/training.md``).

Every subcommand uses the inference API only; ``annotate`` imports napari lazily.
"""

from __future__ import annotations

import argparse
import sys
import time


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default="litemedsam",
        help="litemedsam (bundled), swin-litemedsam (official checkpoint in the model folder), "
        "swin-litemedsam-distilled (weights trained with 'swinlitemedsam train distill --install') "
        "or a path to a .pth file (default: litemedsam)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: auto)")
    parser.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "fp32", "bf16", "fp16"),
        help="auto: bf16 only where the CPU computes it natively and a one-time check on this "
        "machine shows equal masks, else fp32 (on a CUDA GPU fp16 is checked too); bf16 on "
        "other CPUs is emulated and many times slower (a warning says so); fp16: CUDA GPUs "
        "only; default: auto",
    )
    parser.add_argument(
        "--runtime",
        default="auto",
        choices=("auto", "torch", "onnxruntime", "openvino"),
        help="auto: the fastest runtime whose masks equal torch fp32's, measured once per model "
        "and machine; onnxruntime / openvino run the encoder with ONNX Runtime / OpenVINO (fp32 "
        "only; openvino needs the openvino extra); default: auto",
    )


def model_options(args: argparse.Namespace) -> dict:
    """The predictor options chosen on the command line (``--precision``, ``--runtime``)."""
    return {
        "precision": getattr(args, "precision", "auto"),
        "runtime": getattr(args, "runtime", "auto"),
    }


def load_predictor(args: argparse.Namespace):
    """``BoxPredictor.from_pretrained`` with the command line's options (see
    :func:`announce_predictor`)."""
    from napari_swinlitemedsam.inference.predictor import BoxPredictor

    return announce_predictor(
        lambda: BoxPredictor.from_pretrained(args.model, device=args.device, **model_options(args))
    )


def announce_predictor(build):
    """Call ``build()`` for a predictor; print one line naming the encoder's runtime and
    precision, and any warning as one line (no source excerpt), both on stderr so that piped
    output stays clean."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        predictor = build()
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    print(f"encoder: {predictor.describe_runtimes()}", file=sys.stderr)
    return predictor


def build_parser() -> argparse.ArgumentParser:
    from napari_swinlitemedsam.cli.embed import add_cache_arguments, add_embed_parser

    parser = argparse.ArgumentParser(
        prog="swinlitemedsam",
        description="Box-prompted medical and microscopy segmentation with Swin-LiteMedSAM / "
        "LiteMedSAM.",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the Python traceback of every failure (may also be given after the command)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    segment = commands.add_parser(
        "segment", help="segment challenge .npz cases or zarr / OME-Zarr stacks"
    )
    segment.add_argument(
        "inputs", nargs="+", help=".npz files or folders of them; .zarr / .ome.zarr stacks"
    )
    segment.add_argument(
        "-o",
        "--output",
        required=True,
        help="folder for the <name>.npz results (zarr stacks: <name>_masks.zarr label stores)",
    )
    segment.add_argument(
        "--boxes",
        default=None,
        metavar="FILE",
        help="3D boxes for the zarr stacks: .npy or CSV, one x_min,y_min,z_min,x_max,y_max,z_max "
        "line per object (inclusive voxels)",
    )
    _add_model_arguments(segment)
    segment.add_argument(
        "--reference",
        action="store_true",
        help="reference-compatible 3D propagation (Swin-LiteMedSAM reference: end slices excluded)",
    )
    segment.add_argument(
        "--stop-when-empty",
        action="store_true",
        help="stop following an object in 3D once a slice comes back empty",
    )
    segment.add_argument(
        "--skip-done",
        action="store_true",
        help="resume: skip cases finished before with the same input, model and settings "
        "(recorded in OUTDIR/.manifest); changed ones are redone",
    )
    add_cache_arguments(segment)
    from napari_swinlitemedsam.cli.cohort import add_cluster_arguments

    add_cluster_arguments(segment)
    _add_model_arguments(add_embed_parser(commands))

    evaluate = commands.add_parser(
        "evaluate", help="DSC and NSD of predictions against ground truth"
    )
    evaluate.add_argument("pred_dir")
    evaluate.add_argument("gt_dir")
    evaluate.add_argument("--csv", default=None, help="also write per-case scores to this CSV file")

    demo = commands.add_parser("demo", help="segment a bundled real sample and report DSC")
    demo.add_argument(
        "--sample", default="nuclei2d", help="bundled sample name (default: nuclei2d)"
    )
    _add_model_arguments(demo)

    annotate = commands.add_parser("annotate", help="open napari with the Box annotator")
    annotate.add_argument(
        "files",
        nargs="*",
        help="images to open (default: a bundled sample); with -o, image files, folders or "
        "glob patterns labelled one after another as a series",
    )
    annotate.add_argument(
        "--sample", default="nuclei2d", help="sample to open when no files are given"
    )
    annotate.add_argument(
        "-o",
        "--output",
        default=None,
        metavar="OUTDIR",
        help="label the inputs as a series: labels and progress are saved in OUTDIR; reopening "
        "the same inputs and OUTDIR resumes where you stopped",
    )
    annotate.add_argument(
        "--format",
        choices=("auto", "tiff", "nifti", "nrrd", "mha", "npz"),
        default="auto",
        help="file format of the series' labels (default: auto, each image's own format with "
        "its scanner geometry: NIfTI for NIfTI and DICOM folders, NRRD, MHA, else TIFF)",
    )
    annotate.add_argument(
        "--skip-done", action="store_true", help="Next / Previous pass over items marked done"
    )
    annotate.add_argument(
        "--read-ahead-mb",
        type=float,
        default=None,
        help="memory for decoded slices of a lazy (zarr / dask) stack kept for reuse (default: 64)",
    )
    add_cache_arguments(annotate)

    from napari_swinlitemedsam.cli.models import add_models_parser
    from napari_swinlitemedsam.cli.train import add_train_arguments

    add_train_arguments(commands)
    add_models_parser(commands)
    return parser


def run_demo(args: argparse.Namespace) -> int:
    import numpy as np

    from napari_swinlitemedsam.evaluation.metrics import case_scores
    from napari_swinlitemedsam.inference.generators import run_to_end
    from napari_swinlitemedsam.inference.pipeline import segment_image_2d, volume_to_uint8
    from napari_swinlitemedsam.inference.volume import segment_volume
    from napari_swinlitemedsam.io.samples import load_sample
    from napari_swinlitemedsam.model.checkpoint import CheckpointError

    sample = load_sample(args.sample)
    try:
        started = time.perf_counter()
        predictor = load_predictor(args)
        loaded_in = time.perf_counter() - started
    except (CheckpointError, ValueError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    labels = sample.labels
    ids = [i for i in np.unique(labels) if i != 0]
    print(f"{sample.name}: {sample.description}")
    print(f"model {predictor.model_name} on {predictor.device}, loaded in {loaded_in:.2f} s")
    started = time.perf_counter()
    if labels.ndim == 2:
        boxes = []
        for label in ids:
            ys, xs = np.nonzero(labels == label)
            boxes.append([xs.min(), ys.min(), xs.max(), ys.max()])
        segs = segment_image_2d(predictor, sample.image, np.array(boxes))
        truth = np.zeros_like(segs)
        for k, label in enumerate(ids, start=1):
            truth[labels == label] = k
        spacing = None
    else:
        boxes = []
        for label in ids:
            zs, ys, xs = np.nonzero(labels == label)
            boxes.append([xs.min(), ys.min(), zs.min(), xs.max(), ys.max(), zs.max()])
        volume = volume_to_uint8(sample.image)
        segs = run_to_end(segment_volume(predictor, volume, np.array(boxes)))
        truth = np.zeros_like(segs)
        for k, label in enumerate(ids, start=1):
            truth[labels == label] = k
        spacing = sample.spacing
    elapsed = time.perf_counter() - started
    scores = case_scores(segs, truth, spacing=spacing)
    print(f"{len(ids)} objects (boxes from the ground truth) segmented in {elapsed:.2f} s")
    print(f"DSC {scores['dsc']:.4f}  NSD {scores['nsd']:.4f}")
    return 0


def prepare_annotate(args: argparse.Namespace):
    """``(series or None, disk cache or None)`` for ``annotate``; ValueError (SeriesError,
    DiskCacheError, LabelFileError) with a message for the user when the arguments do not work."""
    from napari_swinlitemedsam.annotation.series import ImageSeries, SeriesError
    from napari_swinlitemedsam.cli.embed import open_disk_cache

    disk_cache = open_disk_cache(args)
    if args.output is None:
        return None, disk_cache
    if not args.files:
        raise SeriesError(
            "-o OUTDIR labels a series: give the images, folders or patterns to label"
        )
    return ImageSeries.open(args.files, args.output, args.format), disk_cache


def run_annotate(args: argparse.Namespace) -> int:
    from napari_swinlitemedsam._napari.launch import launch_viewer

    try:
        series, disk_cache = prepare_annotate(args)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    read_ahead = None if args.read_ahead_mb is None else int(max(args.read_ahead_mb, 0) * 2**20)
    return launch_viewer(args.files, args.sample, series, args.skip_done, disk_cache, read_ahead)


def failure_text(error: BaseException) -> str:
    """One line for an unexpected failure: its type and message, and how to see more."""
    from napari_swinlitemedsam.cohort.cases import unexpected_failure_text

    return unexpected_failure_text(error)


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; returns the exit code (0 ok, 1 some work failed, 2 bad usage or
    setup). Failures print one line each, a traceback only with ``--debug``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    args = build_parser().parse_args([item for item in argv if item != "--debug"])
    args.debug = debug
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if debug:
            raise
        print(f"error: {failure_text(error)}", file=sys.stderr)
        return 1


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "segment":
        from napari_swinlitemedsam.cli.segment import run_segment

        return run_segment(args)
    if args.command == "embed":
        from napari_swinlitemedsam.cli.embed import run_embed

        return run_embed(args)
    if args.command == "evaluate":
        from napari_swinlitemedsam.evaluation.folder_scores import run_evaluate

        return run_evaluate(args.pred_dir, args.gt_dir, args.csv)
    if args.command == "demo":
        return run_demo(args)
    if args.command == "annotate":
        return run_annotate(args)
    if args.command == "train":
        from napari_swinlitemedsam.cli.train import run_train

        return run_train(args)
    if args.command == "models":
        from napari_swinlitemedsam.cli.models import run_models

        return run_models(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
