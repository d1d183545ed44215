"""The worker side of a Dask cohort run: one model per worker process, and the tasks.

:class:`PredictorPlugin` is registered once per run (``Client.register_plugin``); it travels as
its recipe (model name or path and settings, never weights) and builds the predictor on the
worker the first time a task needs it. Tasks in one worker share that predictor one at a time
(a lock), so a worker started with several threads still holds one model; for GPUs, start one
worker per GPU (one thread) and each holds one model on its own device.

Tasks return small outcome records; outputs are written by the worker itself (atomically), so
only names travel back to the client.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from napari_swinlitemedsam.cohort.cases import (
    CaseOutcome,
    case_failure_text,
    embed_planes,
    model_planes,
    segment_one,
)
from napari_swinlitemedsam.cohort.recipe import PredictorRecipe, SegmentSettings

try:
    from distributed import WorkerPlugin, get_worker
except ImportError:  # the optional 'cluster' extra is missing: nothing here runs then
    WorkerPlugin = object
    get_worker = None

if TYPE_CHECKING:
    import numpy as np

    from napari_swinlitemedsam.inference.predictor import BoxPredictor


class PredictorPlugin(WorkerPlugin):
    """Holds one lazily built predictor per worker process (see module docstring).

    ``torch_threads``: set on every worker when it starts (None leaves torch's default; note
    that Dask's nanny starts workers with ``OMP_NUM_THREADS=1``).
    """

    def __init__(self, recipe: PredictorRecipe, torch_threads: int | None, name: str) -> None:
        self.recipe = recipe
        self.torch_threads = torch_threads
        self.name = name
        self.loads = 0
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._predictor: BoxPredictor | None = None
        self._planes_key: tuple | None = None
        self._planes: list[np.ndarray] | None = None

    def __getstate__(self) -> dict:
        # Only the recipe travels: never a loaded model, nor a lock
        return {"recipe": self.recipe, "torch_threads": self.torch_threads, "name": self.name}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.loads = 0
        self._reset()

    def setup(self, worker=None) -> None:
        if self.torch_threads is not None:
            import torch

            torch.set_num_threads(self.torch_threads)

    @property
    def lock(self) -> threading.Lock:
        """Held by a task for as long as it uses the predictor."""
        return self._lock

    def predictor(self) -> BoxPredictor:
        """The worker's predictor, built on first use (call with :attr:`lock` held)."""
        if self._predictor is None:
            self._predictor = self.recipe.build()
            self.loads += 1
        return self._predictor

    def planes_of(self, path: Path) -> list[np.ndarray]:
        """The model planes of the image at ``path``; the last file's are kept, so that the
        slice ranges of one volume landing on this worker read and map it once (call with
        :attr:`lock` held)."""
        from napari_swinlitemedsam.io.image_files import read_image

        info = os.stat(path)
        key = (str(path), info.st_mtime_ns, info.st_size)
        if key != self._planes_key:
            self._planes_key, self._planes = None, None  # free the previous volume first
            self._planes = model_planes(read_image(path))
            self._planes_key = key
        return self._planes


def _plugin(name: str, dask_worker=None) -> PredictorPlugin:
    """The plugin ``name`` of this worker (``dask_worker``: given by ``Client.run``; tasks
    find their worker themselves)."""
    return (dask_worker or get_worker()).plugins[name]


def load_predictor(plugin_name: str, dask_worker=None) -> str:
    """Build the worker's predictor now (run on every worker with ``Client.run`` before the
    cases); returns "" or the one-line reason it cannot be loaded."""
    plugin = _plugin(plugin_name, dask_worker)
    try:
        with plugin.lock:
            plugin.predictor()
    except Exception as error:  # noqa: BLE001 -- reported to the client as one line
        return case_failure_text(error)
    return ""


def model_loads(plugin_name: str, dask_worker=None) -> int:
    """How many times this worker process built its predictor (tests: once per worker)."""
    return _plugin(plugin_name, dask_worker).loads


def segment_task(
    plugin_name: str, path: str, output_folder: str, settings: SegmentSettings, skip_done: bool
) -> CaseOutcome:
    """Segment one case on this worker (see :func:`cases.segment_one`)."""
    plugin = _plugin(plugin_name)
    with plugin.lock:
        try:
            predictor = plugin.predictor()
        except Exception as error:  # noqa: BLE001 -- the model failed to load here
            return CaseOutcome(Path(path).name, "failed", case_failure_text(error))
        return segment_one(predictor, Path(path), Path(output_folder), settings, skip_done)


@dataclass(frozen=True)
class EmbedOutcome:
    """One slice range of one image: ``planes`` in the whole image, ``[start, stop)`` done,
    ``encoded`` + ``cached`` of them; ``message`` is empty or the one-line failure."""

    path: str
    planes: int
    start: int
    stop: int
    encoded: int = 0
    cached: int = 0
    message: str = ""


def embed_task(plugin_name: str, path: str, start: int, stop: int) -> EmbedOutcome:
    """Encode planes ``[start, stop)`` of the image at ``path`` (``stop`` is clipped to its
    number of planes, which the outcome reports, so the first task of a file also plans the
    rest)."""
    plugin = _plugin(plugin_name)
    with plugin.lock:
        try:
            predictor = plugin.predictor()
            planes = plugin.planes_of(Path(path))
            stop = min(stop, len(planes))
            encoded, cached = embed_planes(predictor, planes, start, stop)
        except Exception as error:  # noqa: BLE001 -- one bad file never stops the others
            return EmbedOutcome(path, 0, start, start, message=case_failure_text(error))
    return EmbedOutcome(path, len(planes), start, stop, encoded, cached)
