"""``swinlitemedsam models``: which models are here, and fetching the downloadable ones.

* ``models list`` — every registry model and every other weight file of the model folder:
  name, status (bundled / installed / missing), path, size, sha256 and source;
* ``models fetch NAME [--force] [--yes] [--url URL]`` — download NAME into the model folder
  with a progress bar (``io.model_download.fetch_model``: verified, atomic, no network when the
  file is already there).

Building the parser imports nothing heavy; the work functions import torch and requests.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_models_parser(commands) -> None:
    """The ``models`` subcommand with its ``list`` and ``fetch`` actions."""
    models = commands.add_parser("models", help="list the models, download Swin-LiteMedSAM")
    actions = models.add_subparsers(dest="models_command", required=True)
    listing = actions.add_parser("list", help="each model: status, path, size, sha256, source")
    listing.add_argument("--model-dir", default=None, help="model folder (default: the user's)")
    fetch = actions.add_parser("fetch", help="download a model into the model folder")
    fetch.add_argument("name", help="the model to download, e.g. swin-litemedsam")
    fetch.add_argument("--force", action="store_true", help="download again even if present")
    fetch.add_argument("--yes", "-y", action="store_true", help="do not ask before downloading")
    fetch.add_argument(
        "--url",
        action="append",
        default=None,
        help="download from this address instead of the registry's (a mirror); repeatable",
    )
    fetch.add_argument("--model-dir", default=None, help="model folder (default: the user's)")


def run_models(args: argparse.Namespace) -> int:
    if args.models_command == "list":
        return run_list(args)
    return run_fetch(args)


def model_rows(model_dir: Path | None = None) -> list[dict[str, str]]:
    """One row per model: the registry's, then the model folder's other ``.pth`` files."""
    from napari_swinlitemedsam.io.model_download import read_card, target_path
    from napari_swinlitemedsam.model.checkpoint import CheckpointError, bundled_litemedsam_path
    from napari_swinlitemedsam.model.registry import BUNDLED, MODEL_WEIGHTS

    rows = []
    for entry in MODEL_WEIGHTS.values():
        if entry.origin == BUNDLED:
            try:
                path = bundled_litemedsam_path()
            except CheckpointError:
                path = None
        else:
            path = target_path(entry, model_dir)
        present = path is not None and path.is_file()
        card = read_card(path) if present else None
        sha256 = (card or {}).get("sha256") or entry.sha256
        if sha256 and not entry.sha256:
            sha256 += " (recorded)"
        rows.append(
            {
                "name": entry.name,
                "status": (entry.origin if entry.origin == BUNDLED else "installed")
                if present
                else "missing",
                "path": str(path) if path is not None else "-",
                "size": _megabytes(path.stat().st_size)
                if present
                else (f"~{entry.approx_mb} MB" if entry.approx_mb else "-"),
                "sha256": sha256 or "-",
                "source": entry.urls[0] if entry.urls else entry.upstream,
            }
        )
    rows.extend(_own_weight_rows(model_dir))
    return rows


def _own_weight_rows(model_dir: Path | None) -> list[dict[str, str]]:
    from napari_swinlitemedsam.annotation.model_choices import read_model_card
    from napari_swinlitemedsam.model.checkpoint import default_model_dir
    from napari_swinlitemedsam.model.registry import MODEL_WEIGHTS

    folder = Path(model_dir) if model_dir is not None else default_model_dir()
    known = {entry.filename for entry in MODEL_WEIGHTS.values()}
    rows = []
    for path in sorted(folder.glob("*.pth")) if folder.is_dir() else []:
        if path.name in known or path.name.startswith("."):
            continue
        card = read_model_card(path) or {}
        rows.append(
            {
                "name": card.get("name") or path.stem,
                "status": "fine-tuned" if card else "own file",
                "path": str(path),
                "size": _megabytes(path.stat().st_size),
                "sha256": card.get("sha256") or "-",
                "source": f"fine-tuned from {card.get('base_model')}" if card else "-",
            }
        )
    return rows


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def run_list(args: argparse.Namespace) -> int:
    from napari_swinlitemedsam.model.checkpoint import MODEL_DIR_ENV, default_model_dir

    folder = Path(args.model_dir) if args.model_dir else default_model_dir()
    print(f"model folder: {folder} (set {MODEL_DIR_ENV} to use another)")
    for row in model_rows(folder):
        print(f"{row['name']}  [{row['status']}]  {row['size']}")
        for field in ("path", "sha256", "source"):
            print(f"    {field}: {row[field]}")
    return 0


def run_fetch(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from napari_swinlitemedsam.io.model_download import (
        ModelDownloadError,
        fetch_model,
        target_path,
    )
    from napari_swinlitemedsam.model.registry import get_weights

    try:
        entry = get_weights(args.name)
    except KeyError as error:
        print(f"error: {error.args[0]}", file=sys.stderr)
        return 2
    model_dir = Path(args.model_dir) if args.model_dir else None
    target = target_path(entry, model_dir)
    needs_download = args.force or not target.is_file()
    if needs_download and entry.downloadable and not args.yes:
        source = (args.url or entry.urls)[0]
        size = f"about {entry.approx_mb} MB" if entry.approx_mb else "the file"
        question = f"Download {size} from {source}\n  to {target}? [y/N] "
        if not sys.stdin.isatty():
            print("error: not asking without a terminal; add --yes to download", file=sys.stderr)
            return 2
        if input(question).strip().lower() not in ("y", "yes"):
            print("nothing downloaded")
            return 1
    steps = fetch_model(entry.name, model_dir=model_dir, force=args.force, urls=args.url)
    bar = None
    try:
        while True:
            progress = next(steps)
            if bar is None:
                bar = tqdm(total=progress.total, unit="B", unit_scale=True, desc=entry.filename)
            bar.update(progress.done - bar.n)
    except StopIteration as finished:
        installed = finished.value
    except ModelDownloadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        steps.close()  # an interrupted download removes its partial file
        if bar is not None:
            bar.close()
    for warning in installed.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if installed.already_present:
        print(f"{entry.name} is already installed at {installed.path} (nothing downloaded)")
    else:
        print(f"installed {entry.name} at {installed.path} (sha256 {installed.sha256})")
    return 0
