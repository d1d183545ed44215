"""napari reader and writer for CT / MR volumes: NIfTI, DICOM folders, NRRD and MetaImage.

The reading and writing live in :mod:`napari_swinlitemedsam.io.medical_volumes`; this module only
builds layer data. A volume opens as one Image layer in the display orientation (axial slices,
patient left on screen right) with ``scale`` = voxel size (mm), ``translate`` = the position of
its first voxel, axis labels, and the source geometry in ``metadata["geometry"]``. A Labels layer
is written back in its source's format and geometry (a DICOM source as NIfTI).

A DICOM folder holding several series asks which one to open (a list dialog), so the user picks.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from napari_swinlitemedsam.io.dicom_series import MultipleSeriesError, looks_like_dicom_folder
from napari_swinlitemedsam.io.medical_volumes import (
    LABELS_FORMAT_OF_SOURCE,
    LABELS_SUFFIX,
    MedicalFileError,
    MedicalVolume,
    read_medical_volume,
    volume_suffix,
    write_labels_like,
)
from napari_swinlitemedsam.io.volume_geometry import DISPLAY_AXIS_NAMES, VolumeGeometry

# What a CT opens with on screen: the soft-tissue window (W400 / L40), as PACS viewers do.
CT_DISPLAY_LIMITS = (-160.0, 240.0)


def get_medical_reader(path: str | list[str]):
    """The reader function when ``path`` is a medical volume file or a DICOM folder, else None."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths:
        return None
    for item in paths:
        item = Path(item)
        if item.is_dir():
            if not looks_like_dicom_folder(item):
                return None
        elif volume_suffix(item) is None:
            return None
    return read_medical_files


def read_medical_files(path: str | list[str]) -> list[tuple]:
    """One Image layer per volume in ``path``; :class:`MedicalFileError` with what to do."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    return [volume_layer_data(_read_choosing_series(Path(item))) for item in paths]


def _read_choosing_series(path: Path) -> MedicalVolume:
    try:
        return read_medical_volume(path)
    except MultipleSeriesError as several:
        uid = choose_series(several)
        if uid is None:
            raise
        return read_medical_volume(path, series_uid=uid)


def choose_series(several: MultipleSeriesError) -> str | None:
    """Ask which series of ``several`` to open (a modal list); the chosen UID, or None."""
    from qtpy.QtWidgets import QApplication, QInputDialog

    if QApplication.instance() is None:
        return None
    labels = [info.label for info in several.series]
    choice, accepted = QInputDialog.getItem(
        None,
        "Several DICOM series",
        f"{several.folder.name} holds {len(labels)} series; open which one?",
        labels,
        0,
        False,
    )
    if not accepted:
        return None
    return several.series[labels.index(choice)].uid


def volume_layer_data(volume: MedicalVolume) -> tuple:
    """``(data, attributes, "image")`` for napari (see the module docstring)."""
    geometry = volume.geometry
    metadata = geometry.layer_metadata()
    metadata.update({"modality": volume.modality, "source_path": str(volume.path)})
    attributes = {
        "name": volume.description or volume.path.name,
        "scale": geometry.spacing,
        "translate": geometry.layer_translate,
        "axis_labels": DISPLAY_AXIS_NAMES,
        "units": ("mm", "mm", "mm"),
        "metadata": metadata,
        "colormap": "gray",
    }
    if volume.modality == "CT":
        attributes["contrast_limits"] = CT_DISPLAY_LIMITS
    return (volume.data, attributes, "image")


def write_medical_labels(path: str, data, attributes: dict) -> list[str]:
    """Write a Labels layer to ``path`` in its image's source format and geometry.

    The geometry comes from the layer's ``metadata["geometry"]``, else from the one image layer
    of the current viewer that has a geometry of the same shape. A path without a known suffix
    gets the suffix of the source's label format (``.nii.gz`` for NIfTI and DICOM).
    """
    labels = np.asarray(data)
    geometry = (attributes.get("metadata") or {}).get("geometry")
    if not isinstance(geometry, VolumeGeometry):
        geometry = _geometry_from_viewer(labels.shape)
    target = Path(path)
    if volume_suffix(target) is None:
        suffix = LABELS_SUFFIX[LABELS_FORMAT_OF_SOURCE[geometry.source_format]]
        target = target.with_name(target.name + suffix)
    return [str(write_labels_like(target, labels, geometry))]


def _geometry_from_viewer(shape: tuple[int, ...]) -> VolumeGeometry:
    import napari

    viewer = napari.current_viewer()
    layers = [] if viewer is None else list(viewer.layers)
    candidates = [
        layer.metadata["geometry"]
        for layer in layers
        if isinstance(layer.metadata.get("geometry"), VolumeGeometry)
        and layer.metadata["geometry"].display_shape == tuple(shape)
    ]
    if len(candidates) != 1:
        which = "no image" if not candidates else f"{len(candidates)} images"
        raise MedicalFileError(
            f"these labels ({tuple(shape)}) match {which} opened from a NIfTI, DICOM, NRRD or "
            "MHA file, so their scanner geometry is unknown; save them as .npz or .tif, or "
            "open the image they belong to"
        )
    return candidates[0]
