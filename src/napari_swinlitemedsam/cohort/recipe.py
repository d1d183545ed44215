"""What a worker needs to build its own predictor: names and settings, never weights.

A :class:`PredictorRecipe` is small and picklable; each worker process of a cluster turns it
into one :class:`BoxPredictor` (loaded once, reused for every case the worker gets), and the
single-process commands build theirs from the same recipe, so both paths run the same model
with the same options.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from napari_swinlitemedsam.inference.cores import usable_cores

if TYPE_CHECKING:
    from napari_swinlitemedsam.inference.predictor import BoxPredictor


@dataclass(frozen=True)
class PredictorRecipe:
    """How to load the model and its caches.

    Attributes:
        model: a registry name (``litemedsam``, ``swin-litemedsam``...) or a ``.pth`` path
            (the path must be readable by every worker).
        device: ``auto``, ``cpu``, ``cuda`` or ``mps``; ``cuda`` on a worker that owns one GPU
            gives one model per GPU.
        options: predictor options (``precision``, ``runtime``...), as in
            :meth:`BoxPredictor.from_pretrained`.
        cache_folder: the disk embedding cache (a folder every worker can write), or None.
        cache_max_bytes: bound on the disk cache (None: its default).
        cache_dtype: storage dtype of the disk cache (``float32`` or ``float16``).
        factory: ``"module:function"`` returning a predictor instead of loading ``model``
            (custom models; the module must be importable on every worker). It gets
            ``model``, ``device`` and the ``options`` as keyword arguments.
    """

    model: str = "litemedsam"
    device: str = "auto"
    options: dict = field(default_factory=dict)
    cache_folder: str | None = None
    cache_max_bytes: int | None = None
    cache_dtype: str = "float32"
    factory: str | None = None

    def build(self) -> BoxPredictor:
        """Load the model and open the disk cache (CheckpointError, DiskCacheError...)."""
        if self.factory is None:
            from napari_swinlitemedsam.inference.predictor import BoxPredictor

            predictor = BoxPredictor.from_pretrained(self.model, device=self.device, **self.options)
        else:
            module_name, _, function_name = self.factory.partition(":")
            make = getattr(importlib.import_module(module_name), function_name)
            predictor = make(model=self.model, device=self.device, **self.options)
        predictor.disk_cache = self.open_disk_cache()
        return predictor

    def open_disk_cache(self):
        """The :class:`DiskEmbeddingCache` of ``cache_folder``, or None."""
        if self.cache_folder is None:
            return None
        from napari_swinlitemedsam.inference.disk_cache import (
            DEFAULT_MAX_BYTES,
            DiskEmbeddingCache,
        )

        max_bytes = DEFAULT_MAX_BYTES if self.cache_max_bytes is None else self.cache_max_bytes
        return DiskEmbeddingCache(self.cache_folder, max_bytes=max_bytes, dtype=self.cache_dtype)


@dataclass(frozen=True)
class SegmentSettings:
    """Options of ``segment`` that change the masks (they go into the manifest).

    ``reference``: Swin-LiteMedSAM's reference propagation (end slices excluded);
    ``stop_when_empty``: stop following an object once a slice comes back empty.
    """

    reference: bool = False
    stop_when_empty: bool = False


def torch_threads_per_worker(workers: int, cores: int | None = None) -> int:
    """Threads for each of ``workers`` processes sharing ``cores``: an even split, at least one.

    One task runs at a time in a worker, so its torch threads are all the parallelism it has;
    splitting the cores evenly keeps the machine busy without oversubscribing it.
    """
    cores = usable_cores() if cores is None else cores
    return max(1, cores // max(1, workers))
