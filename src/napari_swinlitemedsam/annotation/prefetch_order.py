"""What to encode ahead while the user labels a series: neighbouring slices, then the next item.

Kept apart from the series bookkeeping (``series`` re-exports it) because it is a pure ordering
rule on indices.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class PrefetchTarget:
    """Something worth encoding ahead: slice ``z`` of item ``item`` (``z`` None: a 2D image, or
    the slice the caller shows first)."""

    item: int
    z: int | None


def neighbours_to_prefetch(
    item: int,
    item_count: int,
    z: int | None = None,
    depth: int | None = None,
    slice_radius: int = 2,
    direction: int = 1,
    next_item_z: int | None = None,
    skip_items: Iterable[int] = (),
) -> list[PrefetchTarget]:
    """What to encode in the background while the user works on ``item``, most useful first.

    For a stack (``depth`` slices, the user on slice ``z``): the slices within ``slice_radius``
    of ``z``, nearest first and, at equal distance, the one in the ``direction`` of the user's
    last move first. Then the next item in ``direction`` that is not in ``skip_items`` (e.g.
    done items the user skips), at slice ``next_item_z``.
    """
    if direction not in (1, -1):
        raise ValueError("direction must be +1 or -1")
    targets: list[PrefetchTarget] = []
    if z is not None and depth is not None:
        for distance in range(1, slice_radius + 1):
            for neighbour in (z + direction * distance, z - direction * distance):
                if 0 <= neighbour < depth:
                    targets.append(PrefetchTarget(item, neighbour))
    skipped = set(skip_items)
    following = item + direction
    while 0 <= following < item_count and following in skipped:
        following += direction
    if 0 <= following < item_count:
        targets.append(PrefetchTarget(following, next_item_z))
    return targets
