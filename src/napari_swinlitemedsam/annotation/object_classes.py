"""Which class each object (label id) has, and where its pixels came from.

Objects are the ids of a label map; classes are the ids of a :class:`ClassList` (0: no class).
*Provenance* says whether an object's pixels came from the model, were painted by hand, or both;
the widget records it as boxes are decoded and the user paints. Nothing here touches pixels.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum

UNCLASSIFIED = 0


class Provenance(str, Enum):
    MODEL = "model"
    PAINTED = "painted"
    BOTH = "both"


def combine(first: Provenance | None, second: Provenance | None) -> Provenance | None:
    """The provenance of pixels that came from ``first`` and from ``second``."""
    if first is None or first == second:
        return second
    if second is None:
        return first
    return Provenance.BOTH


@dataclass
class ObjectClasses:
    """``object id -> class id`` and ``object id -> provenance``, for one label map."""

    classes: dict[int, int] = field(default_factory=dict)
    provenance: dict[int, Provenance] = field(default_factory=dict)

    def class_of(self, object_id: int) -> int:
        return self.classes.get(int(object_id), UNCLASSIFIED)

    def provenance_of(self, object_id: int) -> Provenance | None:
        return self.provenance.get(int(object_id))

    def assign(self, object_id: int, class_id: int) -> None:
        """Give ``object_id`` the class ``class_id`` (0 makes it unclassified)."""
        if int(class_id) == UNCLASSIFIED:
            self.classes.pop(int(object_id), None)
        else:
            self.classes[int(object_id)] = int(class_id)

    def assign_new(self, object_id: int, class_id: int) -> None:
        """Give a new object ``class_id`` unless it already has a class (ids of known objects
        keep theirs when their box is drawn again)."""
        if int(object_id) not in self.classes:
            self.assign(object_id, class_id)

    def note(self, object_ids: Iterable[int], source: Provenance) -> None:
        """Record that ``source`` wrote pixels of ``object_ids``."""
        for object_id in object_ids:
            if int(object_id) > 0:
                key = int(object_id)
                merged = combine(self.provenance.get(key), source)
                if merged is not None:
                    self.provenance[key] = merged

    def forget(self, object_id: int) -> None:
        """Drop what is known about ``object_id`` (a widget keeps it instead while the deletion
        can still be undone)."""
        self.classes.pop(int(object_id), None)
        self.provenance.pop(int(object_id), None)

    def merge(self, keep: int, absorbed: int) -> None:
        """``absorbed`` became part of ``keep``: ``keep`` keeps its class (or takes the absorbed
        one's when it had none), provenance is the union. The absorbed id's entry stays, so that
        undoing the pixel edit brings it back with its class; ids no longer in the labels are
        left out of tables and exports anyway."""
        if int(keep) not in self.classes and int(absorbed) in self.classes:
            self.classes[int(keep)] = self.classes[int(absorbed)]
        both = combine(self.provenance.get(int(keep)), self.provenance.get(int(absorbed)))
        if both is not None:
            self.provenance[int(keep)] = both

    def split(self, original: int, new_id: int) -> None:
        """``new_id`` was split off ``original``: it starts with the same class and provenance."""
        if int(original) in self.classes:
            self.classes[int(new_id)] = self.classes[int(original)]
        if int(original) in self.provenance:
            self.provenance[int(new_id)] = self.provenance[int(original)]

    def unclassify(self, class_id: int) -> list[int]:
        """A class was removed: its objects become unclassified; returns their ids."""
        ids = sorted(oid for oid, cid in self.classes.items() if cid == int(class_id))
        for object_id in ids:
            del self.classes[object_id]
        return ids

    def restricted_to(self, object_ids: Iterable[int]) -> ObjectClasses:
        """A copy knowing only ``object_ids`` (e.g. the ids still present in the labels)."""
        keep = {int(i) for i in object_ids}
        return ObjectClasses(
            {k: v for k, v in self.classes.items() if k in keep},
            {k: v for k, v in self.provenance.items() if k in keep},
        )

    def copy(self) -> ObjectClasses:
        return ObjectClasses(dict(self.classes), dict(self.provenance))


def classes_from_table(
    rows: Iterable[Mapping[str, object]], known_class_ids: Iterable[int]
) -> tuple[ObjectClasses, list[str]]:
    """Object classes back from the rows of a saved object table.

    ``rows``: mappings with ``object_id``, ``class_id`` and optionally ``provenance`` (as
    ``io.object_exports.load_object_table`` returns them). Returns the classes and messages
    for the user: rows naming a class that is not in the class list keep the object but leave
    it unclassified.
    """
    known = set(known_class_ids)
    result, unknown = ObjectClasses(), {}
    for row in rows:
        object_id, class_id = int(row["object_id"]), int(row.get("class_id") or 0)
        if class_id and class_id not in known:
            unknown.setdefault(class_id, []).append(object_id)
        else:
            result.assign(object_id, class_id)
        provenance = row.get("provenance")
        if provenance in {p.value for p in Provenance}:
            result.provenance[object_id] = Provenance(str(provenance))
    messages = [
        f"objects {ids} have class id {cid}, which is not in the class list; they are kept "
        "unclassified: add the class (or load the team's class file) and reassign them"
        for cid, ids in sorted(unknown.items())
    ]
    return result, messages
