"""Training data in the challenge format, as 2D frames in the 256 frame.

A challenge training file is an ``.npz`` with ``imgs`` and ``gts``: 2D images are
``imgs`` (H, W, 3) or (H, W) uint8 with ``gts`` (H, W); 3D stacks are ``imgs`` (D, H, W) uint8
with ``gts`` (D, H, W). ``gts`` is an integer label map (0 = background); every non-zero label
of a 2D frame is one training object (its box covers all its pixels in that frame, as the
challenge defines boxes). Stacks are used slice by slice: every slice with an object is a
frame.

A frame goes into the 256 frame exactly as at inference (:func:`..transforms.prepare_image`);
its labels follow with nearest-neighbour resizing to the same ``new_size`` and zero padding.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_swinlitemedsam.inference import intensity
from napari_swinlitemedsam.inference.transforms import FRAME_SIZE, pad_to_frame, prepare_image

#: Objects smaller than this many pixels (in the 256 frame) are not used for training.
MIN_OBJECT_PIXELS_256 = 6


class TrainingDataError(ValueError):
    """A training file is missing, unreadable or not in the challenge training format."""


@dataclass(frozen=True)
class Frame:
    """One 2D training image at its original size.

    Attributes:
        image: (H, W, 3) uint8.
        labels: (H, W) integer map, 0 = background.
        name: where it came from, e.g. ``"case.npz"`` or ``"case.npz[z=12]"``.
    """

    image: np.ndarray
    labels: np.ndarray
    name: str


def resize_labels_nearest(labels: np.ndarray, new_size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an (H, W) label map to ``new_size`` = (h, w).

    Source pixel of target (i, j) is ``(floor(i * H / h), floor(j * W / w))``, as OpenCV's
    ``INTER_NEAREST`` picks it.
    """
    height, width = labels.shape
    new_height, new_width = new_size
    rows = np.minimum((np.arange(new_height) * (height / new_height)).astype(np.int64), height - 1)
    cols = np.minimum((np.arange(new_width) * (width / new_width)).astype(np.int64), width - 1)
    return labels[rows[:, None], cols[None, :]]


def frame_to_256(frame: Frame) -> tuple[np.ndarray, np.ndarray]:
    """``(image_256 (3, 256, 256) float32, labels_256 (256, 256) int32)`` of a frame."""
    image_256, new_size = prepare_image(frame.image)
    labels = resize_labels_nearest(np.asarray(frame.labels), new_size).astype(np.int32)
    return image_256, pad_to_frame(labels, FRAME_SIZE)


def object_ids(labels_256: np.ndarray, min_pixels: int = MIN_OBJECT_PIXELS_256) -> np.ndarray:
    """Sorted non-zero labels with at least ``min_pixels`` pixels."""
    ids, counts = np.unique(labels_256, return_counts=True)
    keep = (ids != 0) & (counts >= min_pixels)
    return ids[keep]


def frames_from_arrays(imgs: np.ndarray, gts: np.ndarray, name: str) -> list[Frame]:
    """Frames of one challenge case: one for a 2D image, one per labelled slice of a stack."""
    imgs, gts = np.asarray(imgs), np.asarray(gts)
    if imgs.ndim == 3 and imgs.shape[-1] == 3 and gts.ndim == 2 or imgs.ndim == 2 and gts.ndim == 2:
        is_stack = False
    elif imgs.ndim == 3 and gts.ndim == 3:
        is_stack = True
    else:
        raise TrainingDataError(
            f"{name}: imgs {imgs.shape} and gts {gts.shape} are neither a 2D image ((H, W, 3) or "
            "(H, W) with (H, W) labels) nor a stack ((D, H, W) with (D, H, W) labels)"
        )
    if imgs.shape[: gts.ndim] != gts.shape:
        raise TrainingDataError(f"{name}: imgs {imgs.shape} and gts {gts.shape} do not match")
    if not np.issubdtype(gts.dtype, np.integer):
        raise TrainingDataError(f"{name}: gts must be an integer label map, got {gts.dtype}")
    if not is_stack:
        return [Frame(intensity.to_rgb_uint8(imgs), gts, name)]
    volume = imgs if imgs.dtype == np.uint8 else intensity.to_uint8(imgs)
    frames = []
    for z in range(volume.shape[0]):
        if gts[z].any():
            rgb = np.repeat(volume[z][:, :, None], 3, axis=2)
            frames.append(Frame(rgb, gts[z], f"{name}[z={z}]"))
    return frames


def load_frames(paths: list[str | os.PathLike]) -> list[Frame]:
    """Every labelled frame of the given challenge training files, in file order."""
    frames: list[Frame] = []
    for path in paths:
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as archive:
                if "imgs" not in archive or "gts" not in archive:
                    raise TrainingDataError(
                        f"{path} lacks 'imgs' or 'gts'; training files need both (challenge format)"
                    )
                imgs, gts = archive["imgs"], archive["gts"]
        except (OSError, ValueError) as error:
            if isinstance(error, TrainingDataError):
                raise
            raise TrainingDataError(f"{path} is not a readable .npz file: {error}") from None
        frames.extend(frames_from_arrays(imgs, gts, path.name))
    return frames


def training_files(folder: str | os.PathLike) -> list[Path]:
    """The ``.npz`` files of a folder (recursively), sorted; TrainingDataError if there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TrainingDataError(f"training data folder {folder} does not exist")
    files = sorted(folder.rglob("*.npz"))
    if not files:
        raise TrainingDataError(
            f"no .npz training files in {folder}; build some with 'train build-data'"
        )
    return files


class FrameSet:
    """Frames in the 256 frame, all prepared when the set is built and kept in memory
    (about 1 MB per frame).

    Frames without any object of :data:`MIN_OBJECT_PIXELS_256` pixels after resizing are
    dropped when the set is built.
    """

    def __init__(self, frames: list[Frame], min_object_pixels: int = MIN_OBJECT_PIXELS_256) -> None:
        self.min_object_pixels = min_object_pixels
        self.frames: list[Frame] = []
        self._prepared: list[tuple[np.ndarray, np.ndarray]] = []
        for frame in frames:
            image_256, labels_256 = frame_to_256(frame)
            if len(object_ids(labels_256, min_object_pixels)):
                self.frames.append(frame)
                self._prepared.append((image_256, labels_256))

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, **kwargs) -> FrameSet:
        return cls(load_frames(training_files(folder)), **kwargs)

    def __len__(self) -> int:
        return len(self.frames)

    def balanced_weights(self) -> np.ndarray:
        """(len,) sampling probabilities giving every source file the same total weight.

        The file is the part of a frame's name before ``[`` (slices of one stack share it).
        """
        files = [frame.name.split("[")[0] for frame in self.frames]
        counts = {name: files.count(name) for name in set(files)}
        weights = np.array([1.0 / counts[name] for name in files])
        return weights / weights.sum()

    def prepared(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """``(image_256 (3, 256, 256) float32, labels_256 (256, 256) int32)`` of frame ``index``."""
        return self._prepared[index]

    def objects(self, index: int) -> np.ndarray:
        """The usable object labels of frame ``index``."""
        return object_ids(self._prepared[index][1], self.min_object_pixels)
