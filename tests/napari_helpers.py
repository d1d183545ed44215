"""Helpers for the napari widget tests: drawing as a user does, waiting, measuring the event loop."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from napari.utils.interactions import (
    mouse_move_callbacks,
    mouse_press_callbacks,
    mouse_release_callbacks,
)
from qtpy.QtCore import QThreadPool, QTimer

from napari_swinlitemedsam.annotation.layer_coordinates import box_to_rectangle

MODEL_TIMEOUT_MS = 900_000  # an encode takes 0.5-20 s on a busy 2-core machine; never hang forever


@dataclass
class FakeMouseEvent:
    """The attributes napari's layer mouse callbacks read from a vispy mouse event."""

    type: str
    position: tuple
    is_dragging: bool = False
    modifiers: list = field(default_factory=list)
    button: int = 1
    view_direction: list | None = None
    up_direction: list | None = None
    dims_displayed: list = field(default_factory=lambda: [0, 1])
    handled: bool = False


class EventProxy:
    """Stands for a vispy event during a drag: napari swaps ``__wrapped__`` for each new event
    so that the drag generator, which keeps its first event object, sees the latest one."""

    def __init__(self, event) -> None:
        self.__wrapped__ = event

    def __getattr__(self, name):
        return getattr(self.__wrapped__, name)


def draw_rectangle(layer, box, slice_index=None) -> None:
    """Drag a rectangle on a Shapes layer the way the mouse does in 'add_rectangle' mode.

    ``box`` is an inclusive ``[x_min, y_min, x_max, y_max]`` pixel box; the drag goes from the
    top-left pixel edge to the bottom-right pixel edge (press, move, release), so napari emits
    exactly the events of a hand-drawn rectangle.
    """
    corners = box_to_rectangle(box, slice_index=slice_index)
    start, end = corners[0], corners[2]
    displayed = [layer.ndim - 2, layer.ndim - 1]
    layer.mode = "add_rectangle"

    def event(kind, data_point, dragging=False):
        world = tuple(layer.data_to_world(data_point))
        return EventProxy(FakeMouseEvent(kind, world, dragging, dims_displayed=displayed))

    mouse_press_callbacks(layer, event("mouse_press", start))
    middle = (start + end) / 2
    mouse_move_callbacks(layer, event("mouse_move", middle, dragging=True))
    mouse_move_callbacks(layer, event("mouse_move", end, dragging=True))
    mouse_release_callbacks(layer, event("mouse_release", end))


def click_without_dragging(layer, point) -> None:
    """Press and release the mouse at data ``point`` ([row, col] or [z, row, col]) on a Shapes
    layer in 'add_rectangle' mode: napari then adds a rectangle a few screen pixels wide."""
    point = np.asarray(point, dtype=np.float64)
    layer.mode = "add_rectangle"
    displayed = [layer.ndim - 2, layer.ndim - 1]
    for kind in ("mouse_press", "mouse_release"):
        world = tuple(layer.data_to_world(point))
        event = EventProxy(FakeMouseEvent(kind, world, dims_displayed=displayed))
        callbacks = mouse_press_callbacks if kind == "mouse_press" else mouse_release_callbacks
        callbacks(layer, event)


def gt_box(mask: np.ndarray) -> np.ndarray:
    """Inclusive (4,) xyxy box of a 2D bool mask."""
    rows, cols = np.nonzero(mask)
    return np.array([cols.min(), rows.min(), cols.max(), rows.max()])


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * (a & b).sum() / total)


def wait_idle(qtbot, annotator, timeout=MODEL_TIMEOUT_MS) -> None:
    """Wait until no model job runs and nothing is queued."""
    qtbot.waitUntil(
        lambda: not annotator.runner.busy and annotator.scheduler.idle,
        timeout=timeout,
    )


def no_worker_threads() -> bool:
    return QThreadPool.globalInstance().activeThreadCount() == 0


class StallMeter:
    """Measures the longest gap between ticks of a 10 ms QTimer: how long the GUI thread was
    unable to turn the event loop. ``where()`` names what was going on at each tick."""

    def __init__(self, where=lambda: "", interval_ms: int = 10) -> None:
        self.ticks: list[tuple[float, str]] = []
        self.where = where
        self.timer = QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._tick)

    def _tick(self) -> None:
        self.ticks.append((time.perf_counter(), self.where()))

    def start(self) -> None:
        self.ticks = []
        self._tick()
        self.timer.start()

    def stop(self) -> float:
        """Stop and return the longest gap in seconds."""
        self.timer.stop()
        self._tick()
        return max(self.gaps()[0][0], 0.0)

    def gaps(self) -> list[tuple[float, str, str]]:
        """``(gap seconds, what before, what after)``, longest first."""
        pairs = zip(self.ticks[:-1], self.ticks[1:])
        gaps = ((b[0] - a[0], a[1], b[1]) for a, b in pairs)
        # by length only: two equal gaps must not compare what ran (job kinds have no order)
        return sorted(gaps, key=lambda gap: gap[0], reverse=True)
