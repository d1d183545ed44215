"""napari reader for challenge ``.npz`` files: cases (``imgs`` + ``boxes``) and predictions (``segs``).

A case opens as an Image (``imgs``), a Shapes layer with one rectangle per box (2D boxes on the
image, 3D boxes on their middle slice), and Labels for ``gts`` when present; ``spacing`` becomes
the layers' scale. A prediction file opens as Labels (``segs``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from napari_swinlitemedsam.annotation.layer_coordinates import (
    box_to_rectangle,
    boxes_3d_to_rectangles,
    spacing_to_layer_scale,
)
from napari_swinlitemedsam.io.challenge_io import ChallengeFileError, load_case, read_npz_arrays

LayerData = tuple  # (data, attributes, layer_type)


def get_reader(path: str | list[str]):
    """The reader function when ``path`` is a challenge ``.npz`` (or a list of them), else None."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths or not all(str(p).endswith(".npz") for p in paths):
        return None
    if not all(_holds_challenge_arrays(Path(p)) for p in paths):
        return None
    return read_challenge_files


def _holds_challenge_arrays(path: Path) -> bool:
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
    except (OSError, ValueError):
        return False
    return {"imgs", "boxes"} <= keys or "segs" in keys


def read_challenge_files(path: str | list[str]) -> list[LayerData]:
    """Layer data for every file in ``path``; a damaged file raises ``ChallengeFileError``."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    layers: list[LayerData] = []
    for item in paths:
        layers.extend(read_challenge_file(Path(item)))
    return layers


def read_challenge_file(path: Path) -> list[LayerData]:
    """Layer data tuples for one challenge file (see the module docstring)."""
    with np.load(path, allow_pickle=False) as archive:
        keys = set(archive.files)
    if not {"imgs", "boxes"} <= keys:
        segs = read_npz_arrays(path, required=("segs",))["segs"]
        if segs.dtype.kind not in "iub":
            raise ChallengeFileError(f"{path}: 'segs' must hold integer labels; got {segs.dtype}")
        return [(segs, {"name": f"{path.stem} segs"}, "labels")]
    case = load_case(path)
    spatial_ndim = 3 if case.is_3d else 2
    frame = {}
    scale = spacing_to_layer_scale(case.spacing, spatial_ndim)
    if scale is not None:
        frame["scale"] = scale
    rgb = not case.is_3d and case.imgs.ndim == 3
    layers: list[LayerData] = [(case.imgs, {"name": case.name, "rgb": rgb, **frame}, "image")]
    if case.gts is not None:
        layers.append((case.gts, {"name": f"{case.name} gts", "opacity": 0.5, **frame}, "labels"))
    if len(case.boxes):
        if case.is_3d:
            rectangles = boxes_3d_to_rectangles(case.boxes)
        else:
            rectangles = [box_to_rectangle(box) for box in np.asarray(case.boxes)]
        attributes = {
            "name": f"{case.name} boxes",
            "shape_type": "rectangle",
            "edge_color": "yellow",
            "face_color": "transparent",
            "edge_width": 2,
            "features": {"box_index": np.arange(1, len(rectangles) + 1)},
            **frame,
        }
        layers.append((rectangles, attributes, "shapes"))
    return layers
