"""Resumable training state and the loss log.

A training state file holds the model weights, the optimiser state, the number of steps done
and the stage's settings; it is written atomically (temporary file, then rename), so a run
killed at any moment leaves either the previous state or the new one. It holds tensors and
plain Python values only and is read with ``torch.load(weights_only=True)``.

The loss log is a CSV file with one row per step (``step``, ``seconds``, ``lr`` and the loss
terms). When a run resumes from a state saved at step ``s``, rows for steps ``>= s`` (written
after that save by the interrupted run) are dropped first, so the log never holds a step twice.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from napari_swinlitemedsam.model.checkpoint import save_torch_atomically


class TrainingStateError(ValueError):
    """A training state file is unreadable or belongs to another run."""


@dataclass
class TrainingState:
    """What :func:`load_state` returns."""

    model: dict[str, torch.Tensor]
    optimizer: dict
    step: int
    stage: str
    settings: dict


def save_state(
    path: str | os.PathLike,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    stage: str,
    settings: dict,
) -> None:
    """Save everything needed to continue a stage after ``step`` steps."""
    save_torch_atomically(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": int(step),
            "stage": stage,
            "settings": json.dumps(settings, sort_keys=True),
        },
        path,
    )


def load_state(path: str | os.PathLike) -> TrainingState:
    """Read a state written by :func:`save_state`."""
    try:
        loaded = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many types for a damaged file
        raise TrainingStateError(
            f"cannot read the training state {path} ({error}); delete it to restart this stage"
        ) from None
    needed = {"model", "optimizer", "step", "stage", "settings"}
    if not isinstance(loaded, dict) or not needed <= set(loaded):
        raise TrainingStateError(
            f"{path} is not a training state file; delete it to restart this stage"
        )
    return TrainingState(
        loaded["model"],
        loaded["optimizer"],
        int(loaded["step"]),
        str(loaded["stage"]),
        json.loads(loaded["settings"]),
    )


class LossLog:
    """Appends one CSV row per step to ``path``; columns are fixed by the first row written."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._columns: list[str] | None = None
        if self.path.is_file():
            with open(self.path, newline="") as handle:
                reader = csv.reader(handle)
                header = next(reader, None)
            self._columns = header

    def truncate_from(self, step: int) -> None:
        """Drop rows whose ``step`` is ``>= step``."""
        if not self.path.is_file():
            return
        with open(self.path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        kept = [row for row in rows if int(row["step"]) < step]
        if len(kept) == len(rows):
            return
        temporary = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        with open(temporary, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self._columns)
            writer.writeheader()
            writer.writerows(kept)
        os.replace(temporary, self.path)

    def append(self, row: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new_file = not self.path.is_file()
        if self._columns is None:
            self._columns = list(row)
        with open(self.path, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self._columns, extrasaction="ignore")
            if new_file:
                writer.writeheader()
            writer.writerow(row)

    def rows(self) -> list[dict[str, float]]:
        """All rows as floats."""
        if not self.path.is_file():
            return []
        with open(self.path, newline="") as handle:
            return [
                {k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(handle)
            ]
