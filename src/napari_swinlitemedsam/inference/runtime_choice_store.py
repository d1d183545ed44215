"""Where the runtime self-check's decisions are kept, under which key, and its lock.

See :mod:`.runtime_choice` for what is decided. A decision is a small JSON file named by a
hash of what it depends on (:func:`choice_key`) in :func:`default_choice_dir`; one self-check
at a time runs per folder (:func:`self_check_lock`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

import torch

from napari_swinlitemedsam.inference.cpu_features import CpuDescription
from napari_swinlitemedsam.inference.disk_cache import weights_fingerprint
from napari_swinlitemedsam.inference.onnx_encoder import onnx_available
from napari_swinlitemedsam.inference.openvino_encoder import openvino_available

#: Bump when the check itself changes, so old decisions are redone. 4: Swin-LiteMedSAM's
#: decoder step got graph candidates; 5: torch measured with freed buffers kept
#: (``heap_reuse``), which made its CPU encodes faster.
SELF_CHECK_VERSION = 5
CHOICE_DIR_ENV = "SWINLITEMEDSAM_RUNTIME_CHOICE_DIR"
SELF_CHECK_WAIT_S = 300.0  # longest wait for another process's self-check


def default_choice_dir() -> Path:
    """``$SWINLITEMEDSAM_RUNTIME_CHOICE_DIR``, else ``runtime-choice/`` in the user cache
    folder."""
    configured = os.environ.get(CHOICE_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("napari-swinlitemedsam")) / "runtime-choice"


def architecture_fingerprint(model: torch.nn.Module) -> str:
    """A short sha256 of ``model``'s parameter and buffer names, shapes and dtypes (no values)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype};".encode())
    return digest.hexdigest()[:20]


def choice_key(
    model: torch.nn.Module,
    device: torch.device,
    cpu: CpuDescription,
    options: tuple[str, str],
    with_weights: bool = False,
) -> str:
    """What the decision depends on, hashed: the model's architecture (and its weights when
    ``with_weights``), the machine, the library versions."""
    try:
        from importlib.metadata import version

        ort_version = version("onnxruntime") if onnx_available() else "none"
        openvino_version = version("openvino") if openvino_available() else "none"
    except ImportError:
        ort_version = openvino_version = "none"
    parts = [
        SELF_CHECK_VERSION,
        architecture_fingerprint(model),
        weights_fingerprint(model) if with_weights else "any weights",
        str(device),
        cpu.model,
        sorted(cpu.flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}),
        torch.__version__,
        ort_version,
        openvino_version,
        torch.get_num_threads(),
        list(options),
    ]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]


def self_check_lock(decision: Path, timeout_s: float = SELF_CHECK_WAIT_S):
    """A lock file beside the ``decision`` file (filelock: across processes, on every OS): one
    self-check per decision at a time; checks of other models or thread counts run freely. A
    folder that cannot be written, or a lock held longer than ``timeout_s``, means measuring
    unlocked."""
    from filelock import FileLock, Timeout

    try:
        decision.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(decision.with_suffix(".lock")), timeout=timeout_s)
        lock.acquire()
    except (OSError, Timeout):
        return contextlib.nullcontext()
    return _releasing(lock)


@contextlib.contextmanager
def _releasing(lock):
    try:
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def self_check_turn(decision: Path, wait_s: float):
    """:func:`self_check_lock` for one step of a self-check done a step at a time: yields True
    when this process may measure now (the lock is held for the step; a folder that cannot
    be written: unlocked), False when another process has held it for ``wait_s`` (it is
    measuring: try again later, its decision may be stored by then)."""
    from filelock import FileLock, Timeout

    try:
        decision.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(decision.with_suffix(".lock")), timeout=wait_s)
        lock.acquire()
    except Timeout:
        yield False
        return
    except OSError:
        yield True
        return
    try:
        yield True
    finally:
        lock.release()
