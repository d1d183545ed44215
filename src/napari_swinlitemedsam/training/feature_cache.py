"""Frozen-encoder outputs kept in memory between training steps, bounded in bytes.

When the image encoder does not learn (the ``decoder`` stage, decoder-only fine-tuning), a view
(frame and flip) seen again needs no second encoder pass. Entries are ``(embedding, skips)``
tensors (``skips`` None for LiteMedSAM); the oldest go first when the budget is exceeded.
"""

from __future__ import annotations


class FeatureCache:
    """Frozen-encoder outputs by view, first in first out, bounded in bytes (0 = off)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: dict = {}
        self._bytes = 0

    @staticmethod
    def _size(value) -> int:
        embedding, skips = value
        tensors = [embedding] + (list(skips) if skips is not None else [])
        return sum(t.numel() * t.element_size() for t in tensors)

    @property
    def bytes_used(self) -> int:
        """Bytes of the tensors held now."""
        return self._bytes

    def get(self, key):
        return self._entries.get(key)

    def put(self, key, value) -> None:
        """Keep ``value`` under ``key`` (replacing what it held), dropping the oldest entries
        until it fits; a value larger than the whole budget is not kept."""
        if key in self._entries:  # a replaced entry's bytes are no longer held
            self._bytes -= self._size(self._entries.pop(key))
        size = self._size(value)
        if size > self.max_bytes:
            return
        while self._bytes + size > self.max_bytes and self._entries:
            oldest = next(iter(self._entries))
            self._bytes -= self._size(self._entries.pop(oldest))
        self._entries[key] = value
        self._bytes += size
