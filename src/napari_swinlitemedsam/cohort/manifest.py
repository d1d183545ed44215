"""Which outputs of a cohort are finished: one small JSON record per case.

A case counts as done only when its record says that *this* input (sha256 of its bytes) was
segmented by *this* model (the encoder identity: name, weights fingerprint, precision...) with
*these* settings, and the output file on disk still has the sha256 the record wrote down. An
output without a record (a run stopped between the two writes), a record of another input,
model or settings, or an output replaced since, is redone. File existence alone never counts.

Layout: ``<output folder>/.manifest/<case file name>.json``, written atomically after the output
itself (which :func:`io.challenge_io.save_segs` also writes atomically). The folder is hidden so
that tools listing the ``*.npz`` outputs never see it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from napari_swinlitemedsam.storage.atomic_files import is_temporary, write_atomically

MANIFEST_FOLDER = ".manifest"
MANIFEST_VERSION = 1
_CHUNK = 1 << 20


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks (any size)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def record_path(output_folder: str | os.PathLike, case_file: str) -> Path:
    """Where the record of ``case_file`` (e.g. ``"3D_ct.npz"``) lives."""
    return Path(output_folder) / MANIFEST_FOLDER / f"{case_file}.json"


def make_record(input_sha256: str, model: str, settings: dict, output_path: Path) -> dict:
    """The record of one finished case (``settings``: JSON-able values only)."""
    return {
        "version": MANIFEST_VERSION,
        "input_sha256": input_sha256,
        "model": model,
        "settings": settings,
        "output": output_path.name,
        "output_sha256": file_sha256(output_path),
    }


def write_record(output_folder: str | os.PathLike, case_file: str, record: dict) -> Path:
    """Write ``record`` atomically (after the output file is in place)."""
    text = json.dumps(record, indent=1, sort_keys=True).encode("utf-8")
    return write_atomically(record_path(output_folder, case_file), lambda s: s.write(text))


def read_record(output_folder: str | os.PathLike, case_file: str) -> dict | None:
    """The record of ``case_file``, or None when missing or unreadable."""
    try:
        return json.loads(record_path(output_folder, case_file).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_done(
    output_folder: str | os.PathLike,
    case_file: str,
    input_sha256: str,
    model: str,
    settings: dict,
) -> bool:
    """Whether ``case_file`` was finished with this input, model and settings (see module)."""
    record = read_record(output_folder, case_file)
    if record is None or record.get("version") != MANIFEST_VERSION:
        return False
    if (
        record.get("input_sha256") != input_sha256
        or record.get("model") != model
        or record.get("settings") != settings
    ):
        return False
    output = Path(output_folder) / str(record.get("output", case_file))
    try:
        return file_sha256(output) == record.get("output_sha256")
    except OSError:
        return False


def remove_partial_outputs(output_folder: str | os.PathLike, case_files: list[str]) -> int:
    """Delete the temporary files that interrupted writers of ``case_files`` left behind
    (outputs and records); call only when no writer of these cases is running. Returns how
    many were deleted."""
    folder = Path(output_folder)
    wanted = set(case_files)
    removed = 0
    for place, ending in ((folder, ""), (folder / MANIFEST_FOLDER, ".json")):
        if not place.is_dir():
            continue
        for leftover in place.iterdir():
            if not is_temporary(leftover):
                continue
            # ".<file name>.<random letters>.tmp", the pattern of storage.atomic_files
            written = leftover.name[1:].rsplit(".", 2)[0].removesuffix(ending)
            if written in wanted:
                leftover.unlink(missing_ok=True)
                removed += 1
    return removed
