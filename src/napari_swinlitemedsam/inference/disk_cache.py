"""An embedding cache on disk: encode each slice once, ever.

Every encoded slice is one file, named by a content key: the sha256 of the encoder's uint8 input
(bytes, shape and dtype) together with the encoder's identity (model name, a fingerprint of its
weights, its parameter dtype, :data:`PREPROCESSING_VERSION`) and the storage dtype. The same
pixels give the same key whatever file, folder or session they come from; other weights, another
preprocessing or another storage dtype give another key, so a stale entry is never used.

Layout: ``<folder>/<key[:2]>/<key>.npz``, an uncompressed ``.npz`` holding the feature tensors
and a ``meta`` array (UTF-8 JSON: format version, key, tensor names, a blake2b digest of the
tensor bytes). Tensors are stored in float32 by default, so that results with and without the
cache are identical; float16 halves the size but moves a few mask pixels, and in 3D propagation
those changes carry on to later slices (measured in ``docs/bulk-labelling.md``).

Safety:

* writes go to a temporary file in the same folder, then ``os.replace`` (two processes writing
  the same key both leave a complete file; a killed writer leaves a hidden ``.tmp`` file that is
  cleaned up later). The files are not fsynced: after a power cut an entry may be damaged, which
  the digest detects; the entry is then recomputed.
* a reader that finds a file vanished (evicted by another process) counts a miss; a file that
  does not load, or whose digest or key does not match, is deleted and counts a miss.
* the total size is bounded: when it exceeds ``max_bytes``, the least recently used entries
  (oldest modification time; a hit sets it to now) are deleted down to 90 % of the budget.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from napari_swinlitemedsam.model.segmenter import ImageFeatures
from napari_swinlitemedsam.storage.atomic_files import is_temporary, write_atomically

LOGGER = logging.getLogger(__name__)

#: Bump when the file layout changes (old entries are then simply never found). 2: the
#: Swin-LiteMedSAM skip context holds the skip maps' convolution terms (a narrower fine map).
CACHE_FORMAT_VERSION = 2
#: Bump when ``transforms.prepare_image`` (resize, normalisation, padding) changes what the
#: encoder sees for the same uint8 input.
PREPROCESSING_VERSION = "longest-side-256-area/minmax/pad-bottom-right/1"
DEFAULT_MAX_BYTES = 8 << 30
STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16}
DEFAULT_STORAGE_DTYPE = "float32"
_EVICT_TO = 0.9  # fraction of max_bytes kept after an eviction
_RESCAN_EVERY = 64  # puts between full scans (other processes add files too)
_STALE_TEMP_SECONDS = 3600.0


class DiskCacheError(ValueError):
    """The disk cache was configured wrongly (bad folder, size or dtype)."""


@dataclass
class DiskCacheStats:
    """Counters since the cache object was made (this process only)."""

    hits: int = 0
    misses: int = 0
    writes: int = 0
    corrupt: int = 0
    write_errors: int = 0
    evicted: int = 0


def weights_fingerprint(model: torch.nn.Module) -> str:
    """A short sha256 of ``model``'s state dict (names, shapes, dtypes and values)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:20]


def encoder_identity(model: torch.nn.Module, model_name: str, variant: str = "") -> str:
    """What, besides the pixels, decides an encoder output.

    ``variant`` names anything else that changes the features (e.g. an autocast precision).
    """
    dtype = next(model.parameters()).dtype
    parts = [model_name or "unnamed", weights_fingerprint(model), str(dtype), PREPROCESSING_VERSION]
    if variant:
        parts.append(variant)
    return "/".join(parts)


def content_key(image: np.ndarray, identity: str, storage: str) -> str:
    """The cache key of one encoder input ``image`` (uint8 (H, W) or (H, W, 3)), hex sha256."""
    array = np.ascontiguousarray(image)
    digest = hashlib.sha256()
    header = f"v{CACHE_FORMAT_VERSION}|{identity}|{storage}|{array.dtype.str}|{array.shape}|"
    digest.update(header.encode())
    digest.update(array.data.cast("B"))
    return digest.hexdigest()


class DiskEmbeddingCache:
    """Encoded slices as files under ``folder`` (see the module docstring).

    Args:
        folder: the cache folder (created when missing).
        max_bytes: bound on the total size of the entries; 0 stores nothing.
        dtype: ``"float32"`` (default: the same masks as without the cache) or
            ``"float16"`` (half the size; a tensor with values beyond the float16 range is
            still stored as float32).
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        max_bytes: int = DEFAULT_MAX_BYTES,
        dtype: str = DEFAULT_STORAGE_DTYPE,
    ) -> None:
        if max_bytes < 0:
            raise DiskCacheError("max_bytes must be >= 0")
        if dtype not in STORAGE_DTYPES:
            raise DiskCacheError(f"dtype must be one of {sorted(STORAGE_DTYPES)}, got {dtype!r}")
        self.folder = Path(folder).expanduser()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise DiskCacheError(
                f"cannot use '{self.folder}' as an embedding cache ({error.strerror or error}); "
                "choose a writable folder"
            ) from error
        if not self.folder.is_dir():
            raise DiskCacheError(f"'{self.folder}' is not a folder; choose a folder for the cache")
        self.max_bytes = max_bytes
        self.dtype = dtype
        self.stats = DiskCacheStats()
        self._approx_bytes: int | None = None
        self._puts_since_scan = 0

    # ------------------------------------------------------------------ keys and paths

    def key_for(self, image: np.ndarray, identity: str) -> str:
        """The key of encoder input ``image`` under encoder ``identity`` and this storage dtype."""
        return content_key(image, identity, self.dtype)

    def path_for(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.npz"

    def __contains__(self, key: str) -> bool:
        return self.path_for(key).is_file()

    # ------------------------------------------------------------------ reading

    def get(self, key: str) -> ImageFeatures | None:
        """The stored features of ``key`` (CPU tensors in the storage dtype), or None."""
        path = self.path_for(key)
        try:
            data = path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            self.stats.misses += 1
            return None
        except OSError as error:
            LOGGER.warning("embedding cache: cannot read %s (%s)", path, error)
            self.stats.misses += 1
            return None
        features = self._decode(data, key)
        if features is None:
            self.stats.corrupt += 1
            self.stats.misses += 1
            LOGGER.warning("embedding cache: %s is damaged; it will be recomputed", path.name)
            path.unlink(missing_ok=True)
            return None
        self.stats.hits += 1
        with contextlib.suppress(OSError):  # a read-only cache still serves its entries
            os.utime(path)  # least recently used = oldest modification time
        return features

    @staticmethod
    def _decode(data: bytes, key: str) -> ImageFeatures | None:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as archive:
                meta = json.loads(archive["meta"].tobytes().decode("utf-8"))
                if meta.get("version") != CACHE_FORMAT_VERSION or meta.get("key") != key:
                    return None
                arrays = {name: archive[name] for name in meta["tensors"]}
        except Exception:  # noqa: BLE001 - truncated zip, bad header, bad JSON, missing member
            return None
        if meta.get("digest") != _digest(arrays) or "embedding" not in arrays:
            return None
        return ImageFeatures.from_tensors({n: torch.from_numpy(a) for n, a in arrays.items()})

    # ------------------------------------------------------------------ writing

    def stored(self, features: ImageFeatures) -> ImageFeatures:
        """``features`` as :meth:`get` would return them after :meth:`put` (CPU, storage dtype)."""
        target = STORAGE_DTYPES[self.dtype]
        converted = {}
        for name, tensor in features.tensors().items():
            tensor = tensor.detach().to("cpu")
            kept = target
            if target == torch.float16 and tensor.abs().max() > torch.finfo(torch.float16).max:
                kept = torch.float32
            converted[name] = tensor.to(kept).contiguous()
        return ImageFeatures.from_tensors(converted)

    def put(self, key: str, features: ImageFeatures) -> ImageFeatures:
        """Store ``features`` under ``key``; returns them as stored (see :meth:`stored`).

        A failed write (disk full, read-only folder) is logged and counted, never raised: the
        cache is an optimisation.
        """
        kept = self.stored(features)
        if self.max_bytes == 0:
            return kept
        arrays = {name: t.numpy() for name, t in kept.tensors().items()}
        meta = {
            "version": CACHE_FORMAT_VERSION,
            "key": key,
            "tensors": sorted(arrays),
            "digest": _digest(arrays),
        }
        members = {"meta": np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)}
        members.update(arrays)
        size = sum(a.nbytes for a in members.values())
        if size > self.max_bytes:
            return kept
        path = self.path_for(key)
        try:
            # numpy's stubs read **members as its allow_pickle flag; the keys are array names
            write_atomically(path, lambda stream: np.savez(stream, **members), durable=False)  # type: ignore[arg-type]
        except OSError as error:
            self.stats.write_errors += 1
            LOGGER.warning("embedding cache: cannot write %s (%s)", path, error)
            return kept
        self.stats.writes += 1
        self._puts_since_scan += 1
        if self._approx_bytes is not None:
            self._approx_bytes += size
        if (
            self._approx_bytes is None
            or self._approx_bytes > self.max_bytes
            or self._puts_since_scan >= _RESCAN_EVERY
        ):
            self.evict()
        return kept

    # ------------------------------------------------------------------ size and eviction

    def entries(self) -> list[tuple[Path, int, float]]:
        """``(path, bytes, modification time)`` of every entry; vanished files are skipped."""
        found = []
        for path in self.folder.glob("??/*.npz"):
            try:
                info = path.stat()
            except OSError:
                continue
            found.append((path, info.st_size, info.st_mtime))
        return found

    @property
    def nbytes(self) -> int:
        """Total size of the entries on disk now (all processes)."""
        return sum(size for _, size, _ in self.entries())

    def __len__(self) -> int:
        return len(self.entries())

    def evict(self, max_bytes: int | None = None) -> int:
        """Delete least recently used entries until at most 90 % of ``max_bytes`` remain (when
        the total exceeds ``max_bytes``, default :attr:`max_bytes`), and stale temporary files.
        Returns the number of entries deleted."""
        limit = self.max_bytes if max_bytes is None else max_bytes
        self._remove_stale_temporaries()
        entries = self.entries()
        total = sum(size for _, size, _ in entries)
        removed = 0
        if total > limit:
            goal = int(limit * _EVICT_TO)
            for path, size, _ in sorted(entries, key=lambda entry: entry[2]):
                if total <= goal:
                    break
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass  # another process evicted it first
                except OSError:
                    continue
                total -= size
                removed += 1
        self.stats.evicted += removed
        self._approx_bytes = total
        self._puts_since_scan = 0
        return removed

    def clear(self) -> None:
        """Delete every entry."""
        self.evict(max_bytes=0)

    def _remove_stale_temporaries(self) -> None:
        now = time.time()
        for path in self.folder.glob("??/.*"):
            if not is_temporary(path):
                continue
            try:
                if now - path.stat().st_mtime > _STALE_TEMP_SECONDS:
                    path.unlink()
            except OSError:
                continue


def _digest(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.data.cast("B"))
    return digest.hexdigest()
