"""Encode the next slices of a propagation while the current one decodes.

A 3D propagation knows which slices it will visit before it starts (the boxes only decide
*what* is decoded on a slice, not *which* slice comes next), so encoding, which depends on the
pixels alone, can run ahead of decoding. :class:`EncodeAhead` runs the encoder in one background
thread, ``lookahead`` slices ahead of the slice the caller asks for, optionally several slices per
encoder call (``batch``). The caller's thread meanwhile decodes, cleans masks and finds the next
boxes (numpy and Python work that leaves cores free).

Thread use: only the background thread calls the predictor's ``encode`` (``encode_many`` for
batches), and so the
embedding caches); the caller only decodes. torch and ONNX Runtime release the GIL while they
compute, so both threads progress. :meth:`EncodeAhead.close` cancels what has not started and
waits for the encode in flight, so after it no thread other than the caller uses the predictor.

Slices the caller skips (a direction that ended early) are dropped from the queue; at most
``lookahead`` slices are encoded for nothing, and they stay in the cache.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from napari_swinlitemedsam.inference.embedding_cache import EncodedSlice

#: Slices encoded ahead of the one being decoded. One keeps the encoder busy while a slice
#: decodes; more only adds slices encoded for nothing when a direction ends early.
DEFAULT_LOOKAHEAD = 1


class EncodeAhead:
    """Encodes ``order``'s slices of ``volume`` in a background thread, ahead of :meth:`get`.

    Args:
        predictor: the :class:`~.predictor.BoxPredictor` (``encode``; ``encode_many`` when
            ``batch`` > 1).
        volume: anything indexable by slice, ``volume[z]`` an (H, W) image (array or
            :class:`~.volume_slices.VolumeSlices`).
        order: slice indices in the order they will be asked for (a slice may come twice).
        key: cache key of the volume; slice ``z`` is cached under ``(key, z)``.
        lookahead: slices encoded ahead (0: no background thread; a slice is encoded when
            asked for, in the caller's thread, as a plain loop would, with the ``batch`` - 1
            slices after it).
        batch: slices per encoder call.

    Use as a context manager (or call :meth:`close`), so the thread stops with the caller.
    """

    def __init__(
        self,
        predictor: Any,
        volume: Any,
        order: Sequence[int],
        key: Hashable,
        lookahead: int = DEFAULT_LOOKAHEAD,
        batch: int = 1,
    ) -> None:
        if lookahead < 0 or batch < 1:
            raise ValueError("lookahead must be >= 0 and batch >= 1")
        self.predictor, self.volume, self.key = predictor, volume, key
        self.order = [int(z) for z in order]
        self.lookahead, self.batch = lookahead, batch
        self._cursor = 0  # position in ``order`` of the next slice the caller may ask for
        self._submitted = 0  # positions [0, _submitted) are queued or done
        self._futures: dict[int, Future] = {}  # position -> Future of its chunk's list
        self._chunk_start: dict[int, int] = {}  # position -> first position of its chunk
        self._pool = ThreadPoolExecutor(1, "encode-ahead") if lookahead > 0 else None
        self._held: dict[int, EncodedSlice] = {}  # without the thread: a chunk's later slices

    def __enter__(self) -> EncodeAhead:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def get(self, z: int) -> EncodedSlice:
        """The encoded slice ``z``: the next occurrence of ``z`` in ``order`` from the cursor.

        Slices of ``order`` before it are skipped (their queued encodes cancelled). A ``z``
        not in the rest of ``order`` is encoded at once.
        """
        try:
            position = self.order.index(int(z), self._cursor)
        except ValueError:
            return self._encode_now(int(z))
        self._skip_to(position)
        self._cursor = position + 1
        if self._pool is None:
            return self._encode_in_place(position)
        self._fill(position)
        future = self._futures.pop(position)
        chunk = future.result()  # re-raises the encoder's error here, in the caller's thread
        return chunk[position - self._chunk_start.pop(position)]

    def close(self) -> None:
        """Cancel queued encodes and wait for the one in flight."""
        for future in self._futures.values():
            future.cancel()
        self._futures.clear()
        self._held.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def _encode_in_place(self, position: int) -> EncodedSlice:
        """Without a background thread: the slice at ``position``, encoded in the caller's
        thread together with the ``batch`` - 1 slices after it (kept for their turn)."""
        held = self._held.pop(position, None)
        if held is not None:
            return held
        chunk = self.order[position : position + self.batch]
        encoded = self._encode(chunk)
        for offset, encoded_slice in enumerate(encoded[1:], start=1):
            self._held[position + offset] = encoded_slice
        return encoded[0]

    def _encode_now(self, z: int) -> EncodedSlice:
        """Encode one slice out of turn (through the background thread, when there is one)."""
        if self._pool is None:
            return self._encode([z])[0]
        return self._pool.submit(self._encode, [z]).result()[0]

    def _encode(self, zs: list[int]) -> list[EncodedSlice]:
        if len(zs) == 1:  # what any predictor has (test doubles too): ``encode``
            return [self.predictor.encode(self.volume[zs[0]], key=(self.key, zs[0]))]
        images = [self.volume[z] for z in zs]
        return self.predictor.encode_many(images, [(self.key, z) for z in zs])

    def _skip_to(self, position: int) -> None:
        dropped = []
        for skipped in range(self._cursor, position):
            self._held.pop(skipped, None)
            self._chunk_start.pop(skipped, None)
            future = self._futures.pop(skipped, None)
            if future is not None:
                dropped.append(future)
        still_needed = {id(future) for future in self._futures.values()}
        for future in dropped:
            if id(future) not in still_needed:  # a chunk shared with later slices stays
                future.cancel()  # no effect on a chunk already running

    def _fill(self, position: int) -> None:
        """Queue chunks until ``position`` and the ``lookahead`` slices after it are queued."""
        if self._pool is None:
            return
        self._submitted = max(self._submitted, position)
        target = min(len(self.order), position + 1 + self.lookahead)
        while self._submitted < target:
            start = self._submitted
            stop = min(len(self.order), start + self.batch)
            future = self._pool.submit(self._encode, self.order[start:stop])
            for member in range(start, stop):
                self._futures[member] = future
                self._chunk_start[member] = start
            self._submitted = stop
