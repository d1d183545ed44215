"""The classes objects can belong to ("liver", "tumour", "vessel"): names, colours and ids.

A :class:`ClassList` is ordered (the order the user sees) and validated on every change: ids are
integers from 1 to :data:`MAX_CLASS_ID` (0 is the background of a semantic map), names are
non-empty and unique ignoring case, colours are ``"#rrggbb"``. A team shares one list as a
small JSON file::

    {"version": 1, "classes": [{"id": 1, "name": "liver", "colour": "#1f77b4"}, ...]}

Nothing here knows about objects or pixels; see ``object_classes`` for which object has which
class.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from napari_swinlitemedsam.storage.atomic_files import write_atomically

CLASS_FILE_VERSION = 1
MAX_CLASS_ID = 65535
"""Semantic maps must fit the challenge ``.npz`` format (uint16)."""

PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#bcbd22",
    "#17becf",
    "#7f7f7f",
)
"""Colours handed to new classes in turn (matplotlib's tab10, easy to tell apart)."""

_COLOUR = re.compile(r"^#[0-9a-f]{6}$")


class ClassListError(ValueError):
    """A class list or class file is invalid; the message says what to fix."""


@dataclass(frozen=True)
class ObjectClass:
    """One class: ``class_id`` (1..MAX_CLASS_ID), ``name``, ``colour`` (``"#rrggbb"``)."""

    class_id: int
    name: str
    colour: str

    def as_json(self) -> dict:
        return {"id": self.class_id, "name": self.name, "colour": self.colour}


def normalise_colour(colour: str) -> str:
    """``colour`` as lower-case ``"#rrggbb"`` (``"#RGB"`` and a missing ``#`` are accepted)."""
    text = str(colour).strip().lower()
    if not text.startswith("#"):
        text = "#" + text
    if re.fullmatch(r"#[0-9a-f]{3}", text):
        text = "#" + "".join(c * 2 for c in text[1:])
    if not _COLOUR.match(text):
        raise ClassListError(
            f"colour {colour!r} is not a colour; write it as #rrggbb, e.g. #d62728"
        )
    return text


def _clean_name(name: str) -> str:
    text = str(name).strip()
    if not text:
        raise ClassListError("a class needs a name (got an empty one)")
    return text


def _check_id(class_id) -> int:
    if isinstance(class_id, bool) or not isinstance(class_id, int):
        raise ClassListError(f"class id {class_id!r} is not a whole number")
    if not 1 <= class_id <= MAX_CLASS_ID:
        raise ClassListError(
            f"class id {class_id} is outside 1..{MAX_CLASS_ID} (0 is the background)"
        )
    return class_id


class ClassList:
    """An ordered, validated list of :class:`ObjectClass`; owned by one widget or series."""

    def __init__(self, classes: Iterable[ObjectClass] = ()) -> None:
        self._classes: list[ObjectClass] = []
        for item in classes:
            self._append(ObjectClass(_check_id(item.class_id), item.name, item.colour))

    # ------------------------------------------------------------------ reading
    def __iter__(self) -> Iterator[ObjectClass]:
        return iter(list(self._classes))

    def __len__(self) -> int:
        return len(self._classes)

    def __eq__(self, other) -> bool:
        return isinstance(other, ClassList) and self._classes == other._classes

    def ids(self) -> list[int]:
        return [item.class_id for item in self._classes]

    def get(self, class_id: int) -> ObjectClass:
        """The class with ``class_id``; ClassListError when there is none."""
        for item in self._classes:
            if item.class_id == class_id:
                return item
        raise ClassListError(f"there is no class with id {class_id}; known ids: {self.ids()}")

    def find(self, name: str) -> ObjectClass | None:
        """The class called ``name`` (ignoring case and surrounding spaces), or None."""
        key = str(name).strip().casefold()
        return next((c for c in self._classes if c.name.casefold() == key), None)

    def name_of(self, class_id: int) -> str:
        """The class's name, ``""`` for 0 (no class) or an unknown id."""
        return next((c.name for c in self._classes if c.class_id == class_id), "")

    # ------------------------------------------------------------------ changing
    def add(self, name: str, colour: str | None = None, class_id: int | None = None) -> ObjectClass:
        """Append a class; ``class_id`` defaults to one above the highest, ``colour`` to the next
        palette colour. Returns the new class."""
        if class_id is None:
            class_id = max(self.ids(), default=0) + 1
        if colour is None:
            colour = PALETTE[len(self._classes) % len(PALETTE)]
        item = ObjectClass(_check_id(class_id), name, colour)
        return self._append(item)

    def rename(self, class_id: int, name: str) -> ObjectClass:
        item = self.get(class_id)
        clean = _clean_name(name)
        other = self.find(clean)
        if other is not None and other.class_id != class_id:
            raise ClassListError(
                f"there is already a class called {other.name!r}; pick another name"
            )
        return self._replace(item, replace(item, name=clean))

    def recolour(self, class_id: int, colour: str) -> ObjectClass:
        item = self.get(class_id)
        return self._replace(item, replace(item, colour=normalise_colour(colour)))

    def remove(self, class_id: int) -> ObjectClass:
        """Drop a class (its objects become unclassified: the caller reassigns them)."""
        item = self.get(class_id)
        self._classes.remove(item)
        return item

    def _append(self, item: ObjectClass) -> ObjectClass:
        clean = ObjectClass(item.class_id, _clean_name(item.name), normalise_colour(item.colour))
        if clean.class_id in self.ids():
            raise ClassListError(
                f"class id {clean.class_id} is used by both {self.get(clean.class_id).name!r} and "
                f"{clean.name!r}; give each class its own id"
            )
        if self.find(clean.name) is not None:
            raise ClassListError(
                f"two classes are called {clean.name!r}; class names must differ (ignoring case)"
            )
        self._classes.append(clean)
        return clean

    def _replace(self, old: ObjectClass, new: ObjectClass) -> ObjectClass:
        self._classes[self._classes.index(old)] = new
        return new

    # ------------------------------------------------------------------ files
    def as_json(self) -> dict:
        return {"version": CLASS_FILE_VERSION, "classes": [c.as_json() for c in self._classes]}

    @classmethod
    def from_json(cls, data, source: str = "class list") -> ClassList:
        """A list from :meth:`as_json` data; ClassListError naming ``source`` and the problem."""
        if not isinstance(data, dict) or not isinstance(data.get("classes"), list):
            raise ClassListError(
                f'{source}: expected {{"version": 1, "classes": [{{"id": 1, "name": ..., '
                '"colour": "#rrggbb"}, ...]}'
            )
        version = data.get("version", CLASS_FILE_VERSION)
        if version != CLASS_FILE_VERSION:
            raise ClassListError(
                f"{source}: class file version {version} is not supported "
                f"(this version reads {CLASS_FILE_VERSION}); update napari-swinlitemedsam"
            )
        classes = ClassList()
        for number, entry in enumerate(data["classes"], start=1):
            if not isinstance(entry, dict) or "id" not in entry or "name" not in entry:
                raise ClassListError(f"{source}: class {number} needs an 'id' and a 'name'")
            try:
                classes.add(entry["name"], entry.get("colour"), entry["id"])
            except ClassListError as error:
                raise ClassListError(f"{source}: class {number}: {error}") from None
        return classes

    def save(self, path: str | os.PathLike) -> Path:
        """Write the list as JSON, atomically."""
        text = json.dumps(self.as_json(), indent=1).encode("utf-8")
        return write_atomically(path, lambda stream: stream.write(text))

    @classmethod
    def load(cls, path: str | os.PathLike) -> ClassList:
        """Read a class file written by :meth:`save` (or by hand)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ClassListError(f"{path}: no such class file") from None
        except (OSError, ValueError) as error:
            raise ClassListError(f"{path}: not a readable JSON class file ({error})") from None
        return cls.from_json(data, source=str(path))
