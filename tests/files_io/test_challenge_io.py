"""Reading and validating challenge .npz cases, including fuzzing of the reader."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.lib import format as npy_format

from napari_swinlitemedsam.io.challenge_io import (
    ChallengeCase,
    ChallengeFileError,
    load_case,
)

FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def write_npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def case_2d(**overrides) -> dict:
    arrays = {
        "imgs": np.arange(20 * 30 * 3, dtype=np.uint8).reshape(20, 30, 3),
        "boxes": np.array([[1, 2, 10, 12], [5, 5, 5, 5]], dtype=np.int64),
    }
    arrays.update(overrides)
    return {k: v for k, v in arrays.items() if v is not None}


def case_3d(**overrides) -> dict:
    arrays = {
        "imgs": np.zeros((4, 20, 30), dtype=np.uint8),
        "boxes": np.array([[1, 2, 0, 10, 12, 3]], dtype=np.int64),
        "gts": np.zeros((4, 20, 30), dtype=np.uint8),
        "spacing": np.array([0.8, 0.8, 2.5]),
    }
    arrays.update(overrides)
    return {k: v for k, v in arrays.items() if v is not None}


# --- reading valid cases -----------------------------------------------------------------


def test_load_2d_case(tmp_path):
    arrays = case_2d(gts=np.ones((20, 30), np.uint8))
    case = load_case(write_npz(tmp_path / "2DBox_demo.npz", **arrays))
    assert isinstance(case, ChallengeCase)
    assert case.name == "2DBox_demo" and not case.is_3d
    np.testing.assert_array_equal(case.imgs, arrays["imgs"])
    np.testing.assert_array_equal(case.boxes, arrays["boxes"])
    assert case.gts.shape == (20, 30) and case.spacing is None


def test_load_2d_grey_case_without_prefix(tmp_path):
    case = load_case(write_npz(tmp_path / "x.npz", **case_2d(imgs=np.zeros((20, 30), np.float32))))
    assert not case.is_3d and case.imgs.shape == (20, 30)


def test_load_3d_case(tmp_path):
    case = load_case(write_npz(tmp_path / "3DBox_CT_demo.npz", **case_3d()))
    assert case.is_3d and case.imgs.shape == (4, 20, 30) and case.boxes.shape == (1, 6)
    np.testing.assert_array_equal(case.spacing, [0.8, 0.8, 2.5])
    assert case.spacing.dtype == np.float64


def test_rank_decides_without_prefix(tmp_path):
    assert load_case(write_npz(tmp_path / "vol.npz", **case_3d())).is_3d
    assert not load_case(write_npz(tmp_path / "img.npz", **case_2d())).is_3d


@pytest.mark.parametrize("empty", [np.zeros((0,)), np.zeros((0, 4), np.int64)])
def test_empty_boxes_are_allowed(tmp_path, empty):
    case = load_case(write_npz(tmp_path / "2D_empty.npz", **case_2d(boxes=empty)))
    assert case.boxes.shape == (0, 4)


def test_empty_boxes_3d(tmp_path):
    case = load_case(write_npz(tmp_path / "3D_empty.npz", **case_3d(boxes=np.zeros((0, 6)))))
    assert case.boxes.shape == (0, 6)


def test_float_boxes_are_allowed(tmp_path):
    boxes = np.array([[1.5, 2.0, 10.0, 12.25]])
    case = load_case(write_npz(tmp_path / "2D_f.npz", **case_2d(boxes=boxes)))
    np.testing.assert_array_equal(case.boxes, boxes)


def test_compressed_files_load(tmp_path):
    path = tmp_path / "2D_c.npz"
    np.savez_compressed(path, **case_2d())
    assert load_case(path).boxes.shape == (2, 4)


# --- reading bad files -------------------------------------------------------------------


def assert_rejected(path: Path, *fragments: str) -> ChallengeFileError:
    with pytest.raises(ChallengeFileError) as info:
        load_case(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message
    return info.value


def test_missing_file(tmp_path):
    assert_rejected(tmp_path / "nope.npz", "does not exist")


def test_folder_instead_of_file(tmp_path):
    assert_rejected(tmp_path, "not a file")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.npz"
    path.write_bytes(b"")
    assert_rejected(path, "empty")


def test_text_file(tmp_path):
    path = tmp_path / "notes.npz"
    path.write_text("hello, these are not arrays")
    assert_rejected(path, "not a .npz archive", "zip signature")


def test_truncated_file(tmp_path):
    path = write_npz(tmp_path / "2D_cut.npz", **case_2d())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert_rejected(path, "truncated or corrupt")


def test_npy_file_with_npz_name(tmp_path):
    path = tmp_path / "single.npz"
    with open(path, "wb") as stream:
        np.save(stream, np.zeros(3))
    assert_rejected(path, "single .npy array")


def test_pickled_object_array_is_not_unpickled(tmp_path):
    path = write_npz(
        tmp_path / "2D_obj.npz", **case_2d(boxes=np.array([[1, 2, 3, 4], None], dtype=object))
    )
    assert_rejected(path, "'boxes'", "Python objects")


def test_misnamed_keys_lists_what_exists(tmp_path):
    path = write_npz(tmp_path / "2D_keys.npz", img=np.zeros((4, 4, 3)), box=np.zeros((1, 4)))
    assert_rejected(path, "missing", "'imgs'", "'boxes'", "'img'", "'box'")


def test_header_claiming_more_data_than_stored(tmp_path):
    # A corrupt header announcing a huge array must not trigger a huge allocation.
    header = io.BytesIO()
    npy_format.write_array_header_1_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": (99999, 99999)}
    )
    path = tmp_path / "2D_huge.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("imgs.npy", header.getvalue() + bytes(16))
        archive.writestr("boxes.npy", _npy_bytes(np.zeros((0, 4))))
    assert_rejected(path, "'imgs'", "truncated or corrupt")


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "arrays", "fragments"),
    [
        (
            "2D_rgba.npz",
            case_2d(imgs=np.zeros((5, 5, 4), np.uint8)),
            ["(H, W, 3) or (H, W)", "(5, 5, 4)"],
        ),
        ("2D_1d.npz", case_2d(imgs=np.zeros(5, np.uint8)), ["(H, W, 3) or (H, W)"]),
        ("3D_flat.npz", case_3d(imgs=np.zeros((20, 30), np.uint8), gts=None), ["(D, H, W)"]),
        ("3D_boxes4.npz", case_3d(boxes=np.zeros((1, 4))), ["(N, 6)", "(1, 4)"]),
        ("2D_boxes6.npz", case_2d(boxes=np.zeros((1, 6))), ["(N, 4)", "(1, 6)"]),
        ("2D_box1d.npz", case_2d(boxes=np.array([1, 2, 3, 4])), ["(N, 4)"]),
        (
            "2D_nan.npz",
            case_2d(boxes=np.array([[0, 0, 4, 4], [1, np.nan, 3, 3]])),
            ["box(es) [1]", "NaN"],
        ),
        (
            "2D_inv.npz",
            case_2d(boxes=np.array([[0, 0, 4, 4], [5, 1, 3, 3]])),
            ["box(es) [1]", "minimum corner"],
        ),
        (
            "3D_inv.npz",
            case_3d(boxes=np.array([[1, 1, 3, 2, 2, 2]])),
            ["box(es) [0]", "minimum corner"],
        ),
        ("2D_strbox.npz", case_2d(boxes=np.array([["a", "b", "c", "d"]])), ["'boxes'", "dtype"]),
        ("2D_boolbox.npz", case_2d(boxes=np.ones((1, 4), bool)), ["'boxes'", "dtype"]),
        ("2D_cimg.npz", case_2d(imgs=np.zeros((4, 4, 3), complex)), ["'imgs'", "numeric"]),
        ("2D_bimg.npz", case_2d(imgs=np.zeros((4, 4, 3), bool)), ["'imgs'", "numeric"]),
        ("2D_nanimg.npz", case_2d(imgs=np.full((4, 4), np.nan)), ["'imgs'", "NaN"]),
        ("2D_gts.npz", case_2d(gts=np.zeros((3, 3), np.uint8)), ["'gts'", "does not match"]),
        ("2D_fgts.npz", case_2d(gts=np.zeros((20, 30), np.float32)), ["'gts'", "integer"]),
        ("3D_sp.npz", case_3d(spacing=np.array([1.0, -1.0, 1.0])), ["'spacing'", "positive"]),
        ("3D_sp2.npz", case_3d(spacing=np.array([1.0, 1.0])), ["'spacing'"]),
    ],
)
def test_invalid_contents_are_explained(tmp_path, name, arrays, fragments):
    assert_rejected(write_npz(tmp_path / name, **arrays), *fragments)


# --- fuzzing the reader ------------------------------------------------------------------


def _load_or_file_error(path: Path) -> None:
    try:
        case = load_case(path)
    except ChallengeFileError as error:
        assert str(path) in str(error)
        return
    assert isinstance(case, ChallengeCase)


@FUZZ
@given(data=st.binary(max_size=2048))
def test_random_bytes_only_raise_file_errors(tmp_path, data):
    path = tmp_path / "2D_fuzz.npz"
    path.write_bytes(data)
    _load_or_file_error(path)


@FUZZ
@given(
    cut=st.integers(min_value=0, max_value=10_000),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), max_size=4),
    compressed=st.booleans(),
)
def test_damaged_archives_only_raise_file_errors(tmp_path, cut, flips, compressed):
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(
        buffer, **case_2d(gts=np.ones((20, 30), np.uint8))
    )
    data = bytearray(buffer.getvalue())
    for position, xor in flips:
        data[position % len(data)] ^= xor
    path = tmp_path / "2D_damaged.npz"
    path.write_bytes(bytes(data[: max(1, len(data) - cut % len(data))]))
    _load_or_file_error(path)


_dtypes = st.sampled_from(["u1", "i2", "i8", "f4", "f8", "?", "c8", "U3", "S2", "V4"])
_any_shape = st.lists(st.integers(0, 5), min_size=0, max_size=4).map(tuple)
_plausible_shape = {
    "imgs": st.sampled_from([(6, 7, 3), (6, 7), (3, 6, 7), (0, 7, 3), (6, 7, 4)]),
    "boxes": st.sampled_from([(2, 4), (2, 6), (0, 4), (0,), (4,), (1, 5)]),
    "gts": st.sampled_from([(6, 7), (3, 6, 7), (7, 6)]),
    "spacing": st.sampled_from([(3,), (2,), (1, 3)]),
    "other": _any_shape,
}


@st.composite
def _random_arrays(draw):
    """Arrays under the case keys, each with a random dtype and a plausible or random shape."""
    keys = ["imgs", "boxes"] if draw(st.booleans()) else []
    keys += draw(
        st.lists(st.sampled_from(["imgs", "boxes", "gts", "spacing", "other"]), unique=True)
    )
    arrays = {}
    for key in dict.fromkeys(keys):
        dtype = np.dtype(draw(_dtypes))
        shape = draw(st.one_of(_plausible_shape[key], _any_shape))
        size = dtype.itemsize * int(np.prod(shape))
        raw = draw(st.binary(min_size=size, max_size=size))
        arrays[key] = (
            np.frombuffer(raw, dtype=dtype).reshape(shape) if size else np.zeros(shape, dtype)
        )
    return arrays


@settings(FUZZ, max_examples=200)
@given(arrays=_random_arrays(), name=st.sampled_from(["2D_r.npz", "3D_r.npz", "r.npz"]))
def test_random_arrays_only_raise_file_errors(tmp_path, arrays, name):
    path = tmp_path / name
    np.savez(path, **arrays)
    _load_or_file_error(path)


def test_file_error_is_a_value_error():
    assert issubclass(ChallengeFileError, ValueError)
