"""Bookkeeping for labelling a series of images one after another (no GUI).

An :class:`ImageSeries` is an ordered list of image files (from folders, lists or glob patterns)
and an output folder. For every item it knows a state (untouched, in progress, done) and where
its labels are saved: ``OUTDIR/<base name><suffix of the label format>``; with the label format
``"auto"`` (the default) each item's labels are written in its image's own format (NIfTI for
NIfTI and DICOM series, NRRD, MHA, else TIFF) with its scanner geometry. A small JSON file,
``OUTDIR/series_progress.json``, records the states, the item the user was on, and a digest of
the last saved labels, so that

* reopening the same series resumes on the item the user left, with saved labels loaded back
  for correction;
* saving labels that did not change since the last save does not touch the file;
* every write (labels and the progress file) is atomic: a crash or kill mid-save leaves the
  previous file intact;
* beside each instance map go its semantic map and object table (``item_exports``), and the
  series' class list is ``OUTDIR/classes.json``.

One process should drive a series folder at a time (the last writer of the progress file wins).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np

from napari_swinlitemedsam.annotation.class_list import ClassList
from napari_swinlitemedsam.annotation.item_exports import (
    exports_digest,
    image_length_unit,
    read_item_classes,
    table_records,
    write_item_exports,
)
from napari_swinlitemedsam.annotation.object_classes import ObjectClasses
from napari_swinlitemedsam.annotation.prefetch_order import (  # noqa: F401 - their old home
    PrefetchTarget,
    neighbours_to_prefetch,
)
from napari_swinlitemedsam.annotation.series_listing import SeriesError, list_series_items
from napari_swinlitemedsam.io.image_files import LoadedImage, base_name, read_image
from napari_swinlitemedsam.io.label_files import (
    AUTO_FORMAT,
    LABEL_FORMATS,
    check_label_format,
    labels_digest,
    labels_format_for,
    load_labels,
    save_labels,
)
from napari_swinlitemedsam.storage.atomic_files import write_atomically

PROGRESS_FILE = "series_progress.json"
CLASS_FILE = "classes.json"
PROGRESS_VERSION = 1


class ItemState(str, Enum):
    UNTOUCHED = "untouched"
    IN_PROGRESS = "in progress"
    DONE = "done"


@dataclass
class _Record:
    state: ItemState = ItemState.UNTOUCHED
    labels_file: str | None = None
    labels_digest: str | None = None
    file_size: int | None = None
    file_mtime_ns: int | None = None

    def as_json(self) -> dict:
        return {
            "state": self.state.value,
            "labels_file": self.labels_file,
            "labels_digest": self.labels_digest,
            "file_size": self.file_size,
            "file_mtime_ns": self.file_mtime_ns,
        }

    @classmethod
    def from_json(cls, data: dict) -> _Record:
        try:
            state = ItemState(data.get("state", ItemState.UNTOUCHED.value))
        except ValueError:
            state = ItemState.UNTOUCHED
        return cls(
            state,
            data.get("labels_file"),
            data.get("labels_digest"),
            data.get("file_size"),
            data.get("file_mtime_ns"),
        )


class ImageSeries:
    """An ordered series of images with saved labels and progress in ``outdir``.

    Args:
        items: the image files, in order (see :func:`list_series_items`).
        outdir: where labels and ``series_progress.json`` go (created when missing).
        label_format: one of :data:`LABEL_FORMATS` for new saves, or ``"auto"``: each image's
            own format (see the module docstring). Labels saved earlier in another format are
            still found and loaded.
    """

    def __init__(
        self,
        items: Sequence[str | os.PathLike],
        outdir: str | os.PathLike,
        label_format: str = AUTO_FORMAT,
    ) -> None:
        self.items = [Path(item) for item in items]
        if not self.items:
            raise SeriesError("a series needs at least one image")
        self.names = [base_name(item) for item in self.items]
        clashes = sorted({n for n in self.names if self.names.count(n) > 1})
        if clashes:
            raise SeriesError(
                f"several images share the base name(s) {clashes}; their labels would overwrite "
                "each other in the output folder: rename them or label them in separate series"
            )
        self.label_format = check_label_format(label_format, allow_auto=True)
        self.outdir = Path(outdir).expanduser()
        self.outdir.mkdir(parents=True, exist_ok=True)
        self._records: dict[str, _Record] = {}
        self._other_entries: dict[str, dict] = {}  # items of earlier sessions not listed now
        self.current = 0
        self._load_progress()

    @classmethod
    def open(cls, sources, outdir, label_format: str = AUTO_FORMAT) -> ImageSeries:
        """A series over :func:`list_series_items` of ``sources``."""
        return cls(list_series_items(sources), outdir, label_format)

    def __len__(self) -> int:
        return len(self.items)

    # ------------------------------------------------------------------ states and moving

    def state(self, index: int) -> ItemState:
        return self._record(index).state

    def states(self) -> list[ItemState]:
        return [self._record(i).state for i in range(len(self))]

    def counts(self) -> dict[ItemState, int]:
        """How many items are in each state."""
        states = self.states()
        return {state: states.count(state) for state in ItemState}

    def go_to(self, index: int) -> int:
        """Make ``index`` the current item (untouched items become in progress); returns it."""
        self._check_index(index)
        self.current = index
        record = self._record(index)
        if record.state == ItemState.UNTOUCHED:
            record.state = ItemState.IN_PROGRESS
        self._write_progress()
        return index

    def neighbour(self, step: int = 1, skip_done: bool = False) -> int | None:
        """The index ``step`` items away (+1 next, -1 previous), passing over done items when
        ``skip_done``; None at either end."""
        if step == 0:
            raise SeriesError("step must be non-zero")
        index = self.current + step
        while 0 <= index < len(self):
            if not (skip_done and self.state(index) == ItemState.DONE):
                return index
            index += 1 if step > 0 else -1
        return None

    def first_unfinished(self) -> int | None:
        """The first item that is not done, or None when all are."""
        for index in range(len(self)):
            if self.state(index) != ItemState.DONE:
                return index
        return None

    def mark_done(self, index: int, done: bool = True) -> None:
        """Mark an item done (or back to in progress)."""
        self._record(index).state = ItemState.DONE if done else ItemState.IN_PROGRESS
        self._write_progress()

    # ------------------------------------------------------------------ images and labels

    def read(self, index: int) -> LoadedImage:
        """The image of item ``index`` (see :func:`image_files.read_image`)."""
        self._check_index(index)
        return read_image(self.items[index])

    def item_label_format(self, index: int) -> str:
        """The format new labels of item ``index`` are written in."""
        self._check_index(index)
        if self.label_format == AUTO_FORMAT:
            return labels_format_for(self.items[index])
        return self.label_format

    def label_path(self, index: int) -> Path:
        """Where new labels of item ``index`` are written (current label format)."""
        return self.outdir / (self.names[index] + LABEL_FORMATS[self.item_label_format(index)])

    def saved_label_path(self, index: int) -> Path | None:
        """The existing labels file of item ``index`` (any format), or None."""
        record = self._record(index)
        candidates = []
        if record.labels_file:
            candidates.append(self.outdir / record.labels_file)
        candidates.append(self.label_path(index))
        candidates += [self.outdir / (self.names[index] + s) for s in LABEL_FORMATS.values()]
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        return None

    def saved_labels(self, index: int, image: LoadedImage | None = None) -> np.ndarray | None:
        """The labels saved for item ``index``, ``(H, W)`` / ``(D, H, W)``, or None.

        ``image``: the item's image when already read (NIfTI / NRRD / MHA labels of a medical
        image are put in its display orientation through its geometry; read when not given).
        """
        path = self.saved_label_path(index)
        if path is None:
            return None
        label_format = next(f for f, s in LABEL_FORMATS.items() if path.name.endswith(s))
        if image is None and label_format in ("nifti", "nrrd", "mha"):
            image = self.read(index)
        return load_labels(path, label_format, image)

    def save(
        self,
        index: int,
        labels: np.ndarray,
        image: LoadedImage | None = None,
        objects: ObjectClasses | None = None,
        class_list: ClassList | None = None,
        unit: str | None = None,
    ) -> bool:
        """Save the instance map ``labels`` of item ``index``, its semantic map and object table
        (classes from ``objects`` / ``class_list``; volumes from the image's spacing in
        ``unit``), each atomically; False when nothing was written because all three are
        already on disk as they are.

        ``image``: the item's image (NIfTI output takes its affine and header; its spacing gives
        volumes). An untouched item becomes in progress; a done item stays done.
        """
        self._check_index(index)
        record = self._record(index)
        label_format = self.item_label_format(index)
        if label_format in ("nifti", "nrrd", "mha") and image is None:
            image = self.read(index)  # its geometry / spacing go into the file
        spacing = image.spacing if image is not None else None
        unit = unit or image_length_unit(image)
        records = table_records(labels, objects, class_list, spacing, unit)
        digest = labels_digest(labels) + ":" + exports_digest(records)
        path = self.label_path(index)
        same_labels = digest == record.labels_digest and record.labels_file == path.name
        if same_labels and self._unchanged_on_disk(path, record):
            return False
        save_labels(path, labels, label_format, image)
        write_item_exports(self.outdir / self.names[index], labels, label_format, records, image)
        info = path.stat()
        record.labels_file, record.labels_digest = path.name, digest
        record.file_size, record.file_mtime_ns = info.st_size, info.st_mtime_ns
        if record.state == ItemState.UNTOUCHED:
            record.state = ItemState.IN_PROGRESS
        self._write_progress()
        return True

    def saved_classes(
        self, index: int, labels: np.ndarray, class_list: ClassList
    ) -> tuple[ObjectClasses, list[str]]:
        """The classes saved with item ``index``'s ``labels``, and messages for the user."""
        self._check_index(index)
        return read_item_classes(self.outdir / self.names[index], labels, class_list)

    @property
    def class_list_path(self) -> Path:
        return self.outdir / CLASS_FILE

    def load_class_list(self) -> ClassList:
        """The series' class list (empty when none was saved)."""
        path = self.class_list_path
        return ClassList.load(path) if path.is_file() else ClassList()

    # ------------------------------------------------------------------ internals

    def _check_index(self, index: int) -> None:
        if not 0 <= index < len(self):
            raise SeriesError(f"item {index} is outside the series of {len(self)} images")

    def _record(self, index: int) -> _Record:
        self._check_index(index)
        return self._records.setdefault(self.names[index], _Record())

    @staticmethod
    def _unchanged_on_disk(path: Path, record: _Record) -> bool:
        try:
            info = path.stat()
        except OSError:
            return False
        return info.st_size == record.file_size and info.st_mtime_ns == record.file_mtime_ns

    @property
    def progress_path(self) -> Path:
        return self.outdir / PROGRESS_FILE

    def _load_progress(self) -> None:
        try:
            data = json.loads(self.progress_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            data = {}
        except (OSError, ValueError) as error:
            raise SeriesError(
                f"{self.progress_path} cannot be read ({error}); move it away to start the "
                "progress record afresh (saved labels are kept)"
            ) from error
        entries = data.get("items", {}) if isinstance(data, dict) else {}
        listed = set(self.names)
        for name, entry in entries.items():
            if name in listed and isinstance(entry, dict):
                self._records[name] = _Record.from_json(entry)
            else:
                self._other_entries[name] = entry
        for index, name in enumerate(self.names):
            record = self._records.setdefault(name, _Record())
            if record.state == ItemState.UNTOUCHED and self.saved_label_path(index) is not None:
                record.state = ItemState.IN_PROGRESS  # labels exist from an earlier run
        current = data.get("current") if isinstance(data, dict) else None
        if current in listed:
            self.current = self.names.index(current)
        else:
            first = self.first_unfinished()
            self.current = 0 if first is None else first

    def _write_progress(self) -> None:
        entries = dict(self._other_entries)
        entries.update({name: record.as_json() for name, record in self._records.items()})
        data = {
            "version": PROGRESS_VERSION,
            "label_format": self.label_format,
            "current": self.names[self.current],
            "items": entries,
        }
        text = json.dumps(data, indent=1, sort_keys=True).encode("utf-8")
        write_atomically(self.progress_path, lambda stream: stream.write(text))
