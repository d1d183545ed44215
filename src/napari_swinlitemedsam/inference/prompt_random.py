"""Random sources for the box-derived prompts.

The prompt generators in :mod:`.box_prompts` draw every random number through a small
*random source* interface, so one body of code serves two kinds of randomness:

* :class:`GeneratorSource` wraps a :class:`numpy.random.Generator`. This is the normal mode:
  :func:`prompt_rng` seeds a generator from the box and the slice, so the same box on the same
  image always yields the same points and scribble, independent of anything drawn before.
* :class:`ReferenceRandomSource` wraps a legacy :class:`numpy.random.RandomState` and a
  :class:`torch.Generator`, and draws exactly as the published Swin-LiteMedSAM code does with
  numpy's and torch's global generators (``np.random.randint``/``choice``/``uniform``/
  ``normal``/``shuffle``, and ``torch.randperm`` for the scribble's start pixel). Seeded like
  the reference, it reproduces the reference's prompts exactly.

Pass either a ``numpy.random.Generator`` or a ``ReferenceRandomSource`` as ``rng`` to the
prompt functions; :func:`as_random_source` does the wrapping.
"""

from __future__ import annotations

import hashlib
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = [
    "GeneratorSource",
    "RandomSource",
    "ReferenceRandomSource",
    "as_random_source",
    "prompt_rng",
]

# Keeps prompt seeds apart from any other use of SeedSequence with the same numbers.
_PROMPT_SEED_DOMAIN = 0x5357_494E_5052_4F4D
_UINT64_MASK = (1 << 64) - 1


@runtime_checkable
class RandomSource(Protocol):
    """The draws the prompt generators need. Ranges are half-open, ``[low, high)``."""

    def integer(self, low: int, high: int) -> int:
        """A uniform integer in ``[low, high)``; requires ``low < high``."""

    def uniform(self, low: float, high: float) -> float:
        """A uniform float in ``[low, high)``."""

    def normal(self, scale: float) -> float:
        """A normal sample with mean 0 and standard deviation ``scale``."""

    def permutation(self, count: int) -> np.ndarray:
        """A random permutation of ``0 .. count-1`` (int64)."""

    def pick(self, count: int) -> int:
        """Index of one item chosen uniformly among ``count`` (a point coordinate)."""

    def pick_start_pixel(self, count: int) -> int:
        """Index of the scribble's start pixel among ``count`` candidate pixels."""


class GeneratorSource:
    """Random source backed by a :class:`numpy.random.Generator`."""

    def __init__(self, generator: np.random.Generator) -> None:
        self.generator = generator

    def integer(self, low: int, high: int) -> int:
        return int(self.generator.integers(low, high))

    def uniform(self, low: float, high: float) -> float:
        return float(self.generator.uniform(low, high))

    def normal(self, scale: float) -> float:
        return float(self.generator.normal(0.0, scale))

    def permutation(self, count: int) -> np.ndarray:
        return self.generator.permutation(count).astype(np.int64)

    def pick(self, count: int) -> int:
        return int(self.generator.integers(count))

    def pick_start_pixel(self, count: int) -> int:
        return int(self.generator.integers(count))


class ReferenceRandomSource:
    """Random source that draws like the published code's global numpy and torch generators.

    Parameters
    ----------
    random_state : legacy numpy generator standing in for ``np.random``'s global state
        (``np.random.RandomState(42)`` equals a fresh ``np.random.seed(42)``).
    torch_generator : CPU ``torch.Generator`` standing in for torch's global generator; only
        the scribble's start pixel uses it (``torch.randperm(count)[0]``). If ``None``, a
        generator seeded with 0 is created.
    """

    def __init__(self, random_state: np.random.RandomState, torch_generator=None) -> None:
        self.random_state = random_state
        if torch_generator is None:
            import torch

            torch_generator = torch.Generator().manual_seed(0)
        self.torch_generator = torch_generator

    def integer(self, low: int, high: int) -> int:
        return int(self.random_state.randint(low, high))

    def uniform(self, low: float, high: float) -> float:
        return float(self.random_state.uniform(low, high))

    def normal(self, scale: float) -> float:
        return float(self.random_state.normal(0, scale))

    def permutation(self, count: int) -> np.ndarray:
        order = np.arange(count)
        self.random_state.shuffle(order)
        return order

    def pick(self, count: int) -> int:
        # np.random.choice(values) draws randint(0, len(values)) and indexes with it.
        return int(self.random_state.randint(0, count))

    def pick_start_pixel(self, count: int) -> int:
        import torch

        return int(torch.randperm(count, generator=self.torch_generator)[0])


def as_random_source(rng: np.random.Generator | RandomSource) -> RandomSource:
    """Wrap a numpy ``Generator``; pass a ready random source through unchanged."""
    if isinstance(rng, np.random.Generator):
        return GeneratorSource(rng)
    if isinstance(rng, RandomSource):
        return rng
    if isinstance(rng, np.random.RandomState):
        raise TypeError(
            "A legacy RandomState is only accepted inside ReferenceRandomSource(random_state, "
            "torch_generator); for normal use pass a numpy.random.Generator (see prompt_rng)."
        )
    raise TypeError(
        f"rng must be a numpy.random.Generator or a random source, got {type(rng).__name__}."
    )


def prompt_rng(box, slice_index: int = 0, image_key: bytes | int = 0) -> np.random.Generator:
    """A generator seeded from a box, a slice index and an optional image key.

    Parameters
    ----------
    box : (4,) xyxy box (frame or original pixels; ints or floats). Its exact values are
        hashed, so equal boxes give equal generators.
    slice_index : z index of the slice in a volume (0 for 2D images).
    image_key : optional identity of the image (e.g. a digest ``bytes`` or an int), so that
        the same box on different images can get different prompts.

    Returns
    -------
    numpy.random.Generator (PCG64) seeded deterministically from these values only.
    """
    coordinates = np.asarray(box, dtype=np.float64).reshape(-1)
    if not np.isfinite(coordinates).all():
        raise ValueError("prompt_rng needs a box with finite coordinates.")
    coordinates = coordinates + 0.0  # -0.0 and 0.0 seed alike
    if isinstance(image_key, (bytes, bytearray, memoryview)):
        key = int.from_bytes(hashlib.sha256(bytes(image_key)).digest(), "little")
    else:
        key = int(image_key) & _UINT64_MASK
    entropy = [
        _PROMPT_SEED_DOMAIN,
        coordinates.size,
        *(int(bits) for bits in coordinates.view(np.uint64)),
        int(slice_index) & _UINT64_MASK,
        key,
    ]
    return np.random.default_rng(np.random.SeedSequence(entropy))
