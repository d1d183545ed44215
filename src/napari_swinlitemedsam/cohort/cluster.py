"""The client side of a Dask cohort run: connect, hand out one task per case, collect.

``local`` / ``local:N`` starts a :class:`distributed.LocalCluster` of N worker processes on
127.0.0.1 (one task at a time each, torch threads = cores // N); an address such as
``tcp://host:8786`` joins a scheduler the user runs (``dask scheduler`` + ``dask worker``,
dask-jobqueue, Kubernetes...). ``distributed`` is an optional dependency (the ``cluster``
extra); without it the cluster option fails with the pip command to run.

Dask reschedules the task of a worker that dies on another worker; outputs are written
atomically and recorded in the manifest only afterwards, so an interrupted case is never taken
as finished, and the temporary files of killed writers are removed when the run ends.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

from napari_swinlitemedsam.cohort import worker
from napari_swinlitemedsam.cohort.cases import FAILED, CaseOutcome, unexpected_failure_text
from napari_swinlitemedsam.cohort.manifest import remove_partial_outputs
from napari_swinlitemedsam.cohort.recipe import (
    PredictorRecipe,
    SegmentSettings,
    torch_threads_per_worker,
)
from napari_swinlitemedsam.cohort.worker import EmbedOutcome, PredictorPlugin
from napari_swinlitemedsam.inference.cores import usable_cores

INSTALL_HINT = "pip install 'napari-swinlitemedsam[cluster]' (or: pip install distributed)"
CONNECT_TIMEOUT = "20s"


class ClusterError(ValueError):
    """The cluster cannot be used: bad ``--cluster`` value, no ``distributed``, no scheduler,
    or a model that does not load on the workers. The message says what to do."""


@dataclass(frozen=True)
class ClusterSpec:
    """``local_workers`` for a cluster started here, else the ``address`` of a scheduler."""

    local_workers: int | None = None
    address: str | None = None


def parse_cluster(text: str) -> ClusterSpec:
    """``local`` (one worker per core), ``local:N``, or a scheduler address ``scheme://...``."""
    if text == "local":
        return ClusterSpec(local_workers=usable_cores())
    if text.startswith("local:"):
        count = text.removeprefix("local:")
        if not count.isdigit() or int(count) < 1:
            raise ClusterError(f"--cluster {text}: N in local:N must be a whole number >= 1")
        return ClusterSpec(local_workers=int(count))
    if "://" in text:
        return ClusterSpec(address=text)
    raise ClusterError(
        f"--cluster {text}: use local, local:N (N worker processes here) or the address of a "
        "Dask scheduler such as tcp://HOST:8786"
    )


def require_distributed():
    """The ``distributed`` module, or ClusterError naming the pip command."""
    try:
        import distributed
    except ImportError as error:
        raise ClusterError(
            f"--cluster needs Dask's 'distributed' package, which is not installed: {INSTALL_HINT}"
        ) from error
    return distributed


@contextlib.contextmanager
def connect(spec: ClusterSpec) -> Iterator:
    """A ``distributed.Client`` for ``spec`` (the local cluster is closed afterwards)."""
    distributed = require_distributed()
    if spec.local_workers is not None:
        cluster = distributed.LocalCluster(
            n_workers=spec.local_workers,
            threads_per_worker=1,  # one case at a time; torch gets the threads instead
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        try:
            with distributed.Client(cluster) as client:
                yield client
        finally:
            cluster.close()
        return
    try:
        client = distributed.Client(spec.address, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as error:
        raise ClusterError(
            f"cannot reach the Dask scheduler at {spec.address} ({error}); start one with "
            "'dask scheduler' and workers with 'dask worker ADDRESS', or use --cluster local:N"
        ) from error
    with client:
        yield client


def default_torch_threads(spec: ClusterSpec) -> int | None:
    """Cores // N for ``local:N``; None (the workers' own setting) for a remote scheduler."""
    if spec.local_workers is None:
        return None
    return torch_threads_per_worker(spec.local_workers)


@contextlib.contextmanager
def predictor_on_workers(
    client, recipe: PredictorRecipe, torch_threads: int | None
) -> Iterator[str]:
    """Register a :class:`PredictorPlugin` (its name is yielded), load the model on every
    worker now (ClusterError with the reason when it does not load) and remove it at the end
    (so that a long-lived cluster does not keep the model)."""
    name = f"swinlitemedsam-predictor-{uuid.uuid4().hex[:12]}"
    client.register_plugin(PredictorPlugin(recipe, torch_threads, name))
    try:
        problems = {text for text in client.run(worker.load_predictor, name).values() if text}
        if problems:
            raise ClusterError("the model does not load on the workers: " + "; ".join(problems))
        yield name
    finally:
        with contextlib.suppress(Exception):  # the cluster may already be going away
            client.unregister_worker_plugin(name)


def segment_cases(
    client,
    plugin_name: str,
    paths: list[Path],
    output_folder: Path,
    settings: SegmentSettings,
    skip_done: bool = False,
) -> Generator[CaseOutcome, None, None]:
    """One task per case; yields each case's outcome as it finishes (any order).

    A case whose worker died more often than Dask allows (``distributed.scheduler.
    allowed-failures``) comes back failed with that reason. When all cases are in, leftovers
    of interrupted writes are deleted.
    """
    from distributed import as_completed

    output_folder = Path(output_folder).resolve()
    futures = {
        client.submit(
            worker.segment_task,
            plugin_name,
            str(Path(path).resolve()),
            str(output_folder),
            settings,
            skip_done,
            pure=False,
            key=f"segment-{Path(path).name}-{uuid.uuid4().hex[:8]}",
        ): Path(path)
        for path in paths
    }
    for future in as_completed(futures):
        try:
            outcome = future.result()
        except Exception as error:  # noqa: BLE001 -- e.g. KilledWorker: one line, go on
            outcome = CaseOutcome(futures[future].name, FAILED, unexpected_failure_text(error))
        future.release()
        yield outcome
    remove_partial_outputs(output_folder, [Path(path).name for path in paths])


def embed_images(
    client, plugin_name: str, paths: list[Path], slices_per_task: int
) -> Generator[EmbedOutcome, None, None]:
    """Encode every plane of every image into the workers' disk cache; yields one outcome per
    slice range as it finishes. Each file's first task (planes ``[0, slices_per_task)``)
    reports its number of planes; its other ranges are then handed out, so the slices of one
    big volume spread over the workers."""
    from distributed import as_completed

    if slices_per_task < 1:
        raise ClusterError("--slices-per-task must be at least 1")

    origin = {}  # future -> (path, first plane), to name a range whose worker was lost

    def submit(path: str, start: int):
        future = client.submit(
            worker.embed_task,
            plugin_name,
            path,
            start,
            start + slices_per_task,
            pure=False,
            key=f"embed-{Path(path).name}-{start}-{uuid.uuid4().hex[:8]}",
        )
        origin[future] = (path, start)
        return future

    first = [submit(str(Path(path).resolve()), 0) for path in paths]
    pending = as_completed(first)
    for future in pending:
        try:
            outcome = future.result()
        except Exception as error:  # noqa: BLE001 -- e.g. KilledWorker
            path, start = origin[future]
            outcome = EmbedOutcome(path, 0, start, start, message=unexpected_failure_text(error))
        del origin[future]
        future.release()
        if outcome.start == 0 and not outcome.message:
            for start in range(slices_per_task, outcome.planes, slices_per_task):
                pending.add(submit(outcome.path, start))
        yield outcome
