"""Which box belongs to which object: the annotator's bookkeeping, without Qt or napari.

An *object* is one label id in the Labels layer. It has one box per slice it was drawn on
(``slice_index`` is ``None`` for a 2D image) and optional click points. The widget reads the
rectangles of its Shapes layer after every finished edit, hands them to
:meth:`AnnotatorState.sync_boxes`, and gets back which objects were added, moved or removed,
so it knows what to decode and which masks to erase.

Ids: a new object gets ``max(highest id in the Labels layer, highest id ever issued) + 1``,
so ids of a layer the user chose, and ids of deleted objects, are never reused.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SliceKey = int | None
"""The slice a box is on: ``z`` in a (D, H, W) stack, ``None`` for a 2D image."""


@dataclass(frozen=True)
class ShapeBox:
    """One rectangle of the box layer as the widget read it.

    ``object_id``: the id stored with the shape (0 = not yet assigned, e.g. just drawn).
    ``slice_index``: see :data:`SliceKey`. ``box``: (4,) int ``[x_min, y_min, x_max, y_max]``,
    or ``None`` for a shape that cannot be a box (off the image, too small); such shapes get
    id 0, and ``problem`` says why for the user. ``click``: the shape is too small on screen to
    be a drawn box (a click without dragging); the widget removes such shapes.
    """

    object_id: int
    slice_index: SliceKey
    box: np.ndarray | None
    problem: str = ""
    click: bool = False


@dataclass(frozen=True)
class ClickPoint:
    """A +/- click: ``slice_index``, pixel ``x`` (column), ``y`` (row), ``positive``."""

    slice_index: SliceKey
    x: float
    y: float
    positive: bool


@dataclass
class AnnotatedObject:
    """One object: its boxes by slice and the clicks that refine it."""

    object_id: int
    boxes: dict[SliceKey, np.ndarray] = field(default_factory=dict)
    points: dict[SliceKey, tuple[ClickPoint, ...]] = field(default_factory=dict)

    def key_boxes(self) -> dict[int, np.ndarray]:
        """``{z: (4,) xyxy}`` of the boxes on stack slices (the key slices for propagation)."""
        return {z: box for z, box in self.boxes.items() if z is not None}


@dataclass(frozen=True)
class BoxSync:
    """What changed in the box layer since the last sync.

    ``ids``: the object id of each shape, in layer order (write them back to the layer).
    ``added``/``moved``/``removed``: ``(object_id, slice_index)`` pairs.
    ``deleted_objects``: objects that lost their last box.
    ``refused``: why each shape that is no box (off the image, too small) was left out.
    """

    ids: list[int]
    added: list[tuple[int, SliceKey]]
    moved: list[tuple[int, SliceKey]]
    removed: list[tuple[int, SliceKey]]
    deleted_objects: list[int]
    refused: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.moved or self.removed)


class AnnotatorState:
    """Boxes and clicks per object for one image; owned by one widget (no shared state)."""

    def __init__(self) -> None:
        self.objects: dict[int, AnnotatedObject] = {}
        self._highest_issued = 0

    def reset(self) -> None:
        """Forget all objects (a new image was chosen); ids issued so far stay used."""
        self.objects.clear()

    def forget_issued_ids(self) -> None:
        """Masks now go into another Labels layer: new ids start above that layer's maximum
        (ids issued for the previous layer no longer matter)."""
        self._highest_issued = 0

    def next_object_id(self, labels_max: int) -> int:
        """A fresh id above every id in the Labels layer and every id issued before."""
        new_id = max(int(labels_max), self._highest_issued, *self.objects, 0) + 1
        self._highest_issued = new_id
        return new_id

    def sync_boxes(
        self, shapes: list[ShapeBox], labels_max: int, extend_object: int | None = None
    ) -> BoxSync:
        """Reconcile the objects with the rectangles now in the box layer.

        A shape keeps its id when that object is known and has no other box on the same slice;
        otherwise (a newly drawn box, a pasted duplicate) it becomes a new object, or a new key
        slice of ``extend_object`` when that object has no box on the shape's slice yet.
        """
        claimed: dict[tuple[int, SliceKey], np.ndarray] = {}
        ids: list[int] = []
        refused: list[str] = []
        for shape in shapes:
            if shape.box is None:
                ids.append(0)
                if shape.problem:
                    refused.append(shape.problem)
                continue
            object_id = int(shape.object_id)
            key = (object_id, shape.slice_index)
            if object_id <= 0 or object_id not in self.objects or key in claimed:
                object_id = self._id_for_new_box(
                    shape.slice_index, claimed, labels_max, extend_object
                )
                key = (object_id, shape.slice_index)
            claimed[key] = np.asarray(shape.box, dtype=np.int64)
            ids.append(object_id)

        before = {
            (obj.object_id, z): box for obj in self.objects.values() for z, box in obj.boxes.items()
        }
        added = [key for key in claimed if key not in before]
        moved = [
            key
            for key, box in claimed.items()
            if key in before and not np.array_equal(box, before[key])
        ]
        removed = [key for key in before if key not in claimed]

        for object_id, z in removed:
            self.objects[object_id].boxes.pop(z, None)
            self.objects[object_id].points.pop(z, None)
        for (object_id, z), box in claimed.items():
            self.objects.setdefault(object_id, AnnotatedObject(object_id)).boxes[z] = box
        deleted = sorted(oid for oid, obj in self.objects.items() if not obj.boxes)
        for object_id in deleted:
            del self.objects[object_id]
        return BoxSync(ids, added, moved, removed, deleted, refused)

    def _id_for_new_box(
        self,
        slice_index: SliceKey,
        claimed: dict[tuple[int, SliceKey], np.ndarray],
        labels_max: int,
        extend_object: int | None,
    ) -> int:
        if (
            extend_object is not None
            and slice_index is not None
            and extend_object in self.objects
            and (extend_object, slice_index) not in claimed
            and slice_index not in self.objects[extend_object].boxes
        ):
            return extend_object
        new_id = self.next_object_id(labels_max)
        self.objects[new_id] = AnnotatedObject(new_id)
        return new_id

    def object_for_click(self, point: ClickPoint) -> int | None:
        """The object whose box on the click's slice holds the click (the smallest such box)."""
        best, best_area = None, None
        for obj in self.objects.values():
            box = obj.boxes.get(point.slice_index)
            if box is None:
                continue
            x_min, y_min, x_max, y_max = box
            if x_min - 0.5 <= point.x <= x_max + 0.5 and y_min - 0.5 <= point.y <= y_max + 0.5:
                area = (x_max - x_min + 1) * (y_max - y_min + 1)
                if best_area is None or area < best_area:
                    best, best_area = obj.object_id, area
        return best

    def sync_points(self, points: list[ClickPoint]) -> list[tuple[int, SliceKey]]:
        """Give every click to its object; returns the ``(object_id, slice)`` whose clicks changed.

        Clicks outside every box on their slice belong to no object and are ignored.
        """
        grouped: dict[tuple[int, SliceKey], list[ClickPoint]] = {}
        for point in points:
            object_id = self.object_for_click(point)
            if object_id is not None:
                grouped.setdefault((object_id, point.slice_index), []).append(point)
        changed = []
        for obj in self.objects.values():
            for z in set(obj.points) | {z for (oid, z) in grouped if oid == obj.object_id}:
                new = tuple(grouped.get((obj.object_id, z), ()))
                if obj.points.get(z, ()) != new:
                    changed.append((obj.object_id, z))
                if new:
                    obj.points[z] = new
                else:
                    obj.points.pop(z, None)
        return changed

    def decode_request(
        self, slice_index: SliceKey, object_ids: list[int]
    ) -> tuple[list[int], np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Everything one batched decoder call on one slice needs.

        Returns ``(ids, boxes (N, 4) xyxy, points (N, P, 2) xy or None, labels (N, P) or None)``
        for the given objects that still have a box on that slice; objects with fewer clicks
        are padded with label -1 (no point).
        """
        ids = [
            oid
            for oid in object_ids
            if slice_index in self.objects.get(oid, AnnotatedObject(0)).boxes
        ]
        if not ids:
            return [], np.zeros((0, 4), np.int64), None, None
        boxes = np.stack([self.objects[oid].boxes[slice_index] for oid in ids])
        clicks = [self.objects[oid].points.get(slice_index, ()) for oid in ids]
        most = max(len(c) for c in clicks)
        if most == 0:
            return ids, boxes, None, None
        points = np.zeros((len(ids), most, 2), dtype=np.float64)
        labels = np.full((len(ids), most), -1, dtype=np.int64)
        for row, object_clicks in enumerate(clicks):
            for column, click in enumerate(object_clicks):
                points[row, column] = (click.x, click.y)
                labels[row, column] = 1 if click.positive else 0
        return ids, boxes, points, labels
