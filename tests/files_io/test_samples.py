"""The bundled sample images load offline, with the shapes, dtypes and labels their metadata claims."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_swinlitemedsam.io.samples import (
    SAMPLE_INFO,
    SAMPLE_NAMES,
    Sample,
    SampleNotFoundError,
    load_sample,
    sample_info,
)

EXPECTED = {
    # name: (shape, image dtype, number of distinct non-zero labels)
    "nuclei2d": ((512, 512), np.uint16, 125),
    "nuclei3d": ((60, 256, 256), np.uint8, 20),
    "brain_mr": ((60, 217, 181), np.uint8, 2),
    "head_ct": ((36, 240, 240), np.int16, 2),
}


def test_every_expected_sample_is_registered():
    assert set(SAMPLE_NAMES) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_loads_with_expected_shape_dtype_and_labels(name):
    sample = load_sample(name)
    shape, dtype, n_labels = EXPECTED[name]

    assert isinstance(sample, Sample)
    assert sample.name == name
    assert sample.image.shape == shape
    assert sample.image.dtype == dtype
    assert sample.labels.shape == sample.image.shape
    assert np.issubdtype(sample.labels.dtype, np.integer)
    assert sample.labels.min() == 0
    assert len(np.unique(sample.labels)) - 1 == n_labels
    # Real images: not constant, and brighter inside the labelled objects than around them.
    assert sample.image.std() > 0
    inside = sample.image[sample.labels > 0].mean()
    outside = sample.image[sample.labels == 0].mean()
    assert inside > outside


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_metadata_is_complete(name):
    info = sample_info(name)
    sample = load_sample(name)
    assert info.ndim == sample.image.ndim
    assert len(info.spacing) == sample.image.ndim
    assert all(s > 0 for s in info.spacing)
    for text in (
        info.spacing_unit,
        info.modality,
        info.description,
        info.labels_description,
        info.source,
        info.licence,
    ):
        assert isinstance(text, str) and text.strip()
    assert sample.licence == info.licence
    assert sample.source == info.source
    assert sample.spacing == info.spacing


def test_nuclei_labels_are_instances():
    # Each id is one object: few ids split into pieces (the 3D labels have small holes/specks).
    for name in ("nuclei2d", "nuclei3d"):
        labels = load_sample(name).labels
        ids = [i for i in np.unique(labels) if i != 0]
        split = sum(ndimage.label(labels == i)[1] > 1 for i in ids)
        assert split <= len(ids) // 4, name


def test_brain_mr_classes_are_nested_sensibly():
    sample = load_sample("brain_mr")
    brain, ventricles = sample.labels == 1, sample.labels == 2
    assert brain.sum() > 20 * ventricles.sum() > 0
    # Ventricles are dark (CSF on T1) compared with the brain tissue around them.
    assert sample.image[ventricles].mean() < 0.6 * sample.image[brain].mean()
    # They lie inside the brain: every ventricle voxel's bounding box is within the brain's.
    brain_box = ndimage.find_objects(brain.astype(np.uint8))[0]
    vent_box = ndimage.find_objects(ventricles.astype(np.uint8))[0]
    for b, v in zip(brain_box, vent_box):
        assert b.start < v.start and v.stop < b.stop


def test_head_ct_is_in_hounsfield_units():
    sample = load_sample("head_ct")
    bone, intracranial = sample.labels == 1, sample.labels == 2
    assert sample.image.min() == -1024  # air, as CT scanners write it
    assert np.median(sample.image[sample.labels == 0]) < -900  # mostly air around the head
    assert sample.image[bone].min() >= 226
    assert 0 <= np.median(sample.image[intracranial]) <= 80  # brain: about 20-45 HU
    # The intracranial label lies inside the skull's extent on every axis.
    skull_box = ndimage.find_objects(bone.astype(np.uint8))[0]
    inner_box = ndimage.find_objects(intracranial.astype(np.uint8))[0]
    for outer, inner in zip(skull_box[1:], inner_box[1:]):
        assert outer.start < inner.start and inner.stop < outer.stop


def test_unknown_sample_name_says_which_exist():
    with pytest.raises(SampleNotFoundError, match="nuclei2d"):
        load_sample("no-such-sample")


def test_loading_twice_gives_equal_independent_arrays():
    first, second = load_sample("nuclei2d"), load_sample("nuclei2d")
    np.testing.assert_array_equal(first.image, second.image)
    first.image[0, 0] += 1
    assert first.image[0, 0] != second.image[0, 0]


def test_registry_keys_match_names():
    assert all(key == info.name for key, info in SAMPLE_INFO.items())
