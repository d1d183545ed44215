"""Atomic writing of challenge predictions and listing of case files."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from napari_swinlitemedsam.io import challenge_io
from napari_swinlitemedsam.io.challenge_io import (
    ChallengeFileError,
    SegmentationWriteError,
    iter_cases,
    save_segs,
)

# --- writing -----------------------------------------------------------------------------


def test_save_round_trip_uint8(tmp_path):
    segs = np.zeros((6, 7), np.int64)
    segs[1:3, 2:5] = 3
    path = save_segs(tmp_path / "out" / "2D_a.npz", segs, extra={"scores": np.array([0.5, 0.25])})
    with np.load(path, allow_pickle=False) as saved:
        assert saved["segs"].dtype == np.uint8
        np.testing.assert_array_equal(saved["segs"], segs)
        np.testing.assert_array_equal(saved["scores"], [0.5, 0.25])


def test_save_uses_uint16_above_255(tmp_path):
    segs = np.zeros((2, 3, 4), np.int32)
    segs[0, 0, 0] = 300
    path = save_segs(tmp_path / "3D_b.npz", segs)
    with np.load(path) as saved:
        assert saved["segs"].dtype == np.uint16 and saved["segs"][0, 0, 0] == 300


@pytest.mark.parametrize(
    ("segs", "fragment"),
    [
        (np.zeros((3, 3), np.float32), "integer"),
        (np.full((3, 3), -1), "negative"),
        (np.full((3, 3), 70000), "65535"),
        (np.zeros(3, np.uint8), "(H, W)"),
    ],
)
def test_save_rejects_bad_segs(tmp_path, segs, fragment):
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        save_segs(tmp_path / "bad.npz", segs)
    assert not list(tmp_path.iterdir())


def test_save_rejects_bad_extra(tmp_path):
    with pytest.raises(ValueError, match="segs"):
        save_segs(tmp_path / "x.npz", np.zeros((2, 2), np.uint8), extra={"segs": np.zeros(1)})
    with pytest.raises(ValueError, match="objects"):
        save_segs(tmp_path / "x.npz", np.zeros((2, 2), np.uint8), extra={"o": np.array([None])})


def _old_file(folder: Path) -> Path:
    path = folder / "2D_case.npz"
    save_segs(path, np.ones((8, 8), np.uint8))
    return path


def _assert_old_content(path: Path) -> None:
    with np.load(path) as saved:
        np.testing.assert_array_equal(saved["segs"], np.ones((8, 8), np.uint8))


def test_failure_while_writing_keeps_old_file_and_removes_temp(tmp_path, monkeypatch):
    path = _old_file(tmp_path)

    def write_half_then_fail(stream, **arrays):
        stream.write(b"PK\x03\x04 partial data")
        raise RuntimeError("disk went away")

    monkeypatch.setattr(challenge_io.np, "savez_compressed", write_half_then_fail)
    with pytest.raises(RuntimeError, match="disk went away"):
        save_segs(path, np.full((8, 8), 7, np.uint8))
    _assert_old_content(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2D_case.npz"]


def test_failure_at_rename_keeps_target_and_removes_temp(tmp_path):
    target = tmp_path / "2D_dir.npz"
    target.mkdir()
    (target / "keep").write_text("x")
    with pytest.raises(SegmentationWriteError, match="2D_dir.npz"):
        save_segs(target, np.zeros((2, 2), np.uint8))
    assert (target / "keep").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2D_dir.npz"]


def test_killed_writer_leaves_old_file_intact(tmp_path):
    path = _old_file(tmp_path)
    # The child writes the new file completely into its temporary file, announces it, and
    # then waits where the rename would happen; it is killed there.
    child = textwrap.dedent(
        """
        import os, sys, time
        import numpy as np
        from napari_swinlitemedsam.io import challenge_io
        def wait_instead_of_renaming(source, destination):
            print(source, flush=True)
            time.sleep(120)

        os.replace = wait_instead_of_renaming
        challenge_io.save_segs(sys.argv[1], np.full((512, 512), 9, np.uint8))
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", child, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        temp_name = process.stdout.readline().strip()
        assert temp_name, "writer exited before reaching the rename"
        temp = Path(temp_name)
        assert temp.parent == tmp_path and temp.name.endswith(".tmp")
        with np.load(temp) as pending:  # the new data were fully written and flushed
            assert pending["segs"].shape == (512, 512)
        _assert_old_content(path)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        process.stdout.close()
    assert process.returncode == -signal.SIGKILL
    _assert_old_content(path)
    assert iter_cases([tmp_path]) == [path]  # leftovers are not mistaken for cases
    save_segs(path, np.full((8, 8), 2, np.uint8))  # and do not block the next write
    with np.load(path) as saved:
        assert saved["segs"][0, 0] == 2


def test_unwritable_folder_gives_clear_error(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(challenge_io.tempfile, "mkstemp", refuse)
    with pytest.raises(SegmentationWriteError, match="not writable"):
        save_segs(tmp_path / "2D_x.npz", np.zeros((2, 2), np.uint8))


def test_read_only_folder_gives_clear_error(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        try:
            (folder / "probe").write_text("x")
        except PermissionError:
            pass
        else:
            pytest.skip("this user can write into read-only folders (e.g. root)")
        with pytest.raises(SegmentationWriteError, match="not writable"):
            save_segs(folder / "2D_x.npz", np.zeros((2, 2), np.uint8))
        assert not list(folder.iterdir())
    finally:
        folder.chmod(0o755)


# --- listing cases -----------------------------------------------------------------------


def test_iter_cases_expands_folders_sorted_and_keeps_files(tmp_path):
    folder = tmp_path / "cases"
    folder.mkdir()
    for name in ["b.npz", "a.npz", "notes.txt", ".a.npz.123.tmp"]:
        (folder / name).write_bytes(b"")
    (folder / "sub").mkdir()
    (folder / "sub" / "c.npz").write_bytes(b"")
    single = tmp_path / "z.npz"
    single.write_bytes(b"")
    found = iter_cases([single, folder, folder / "a.npz"])
    assert found == [single, folder / "a.npz", folder / "b.npz"]


def test_iter_cases_missing_path(tmp_path):
    with pytest.raises(ChallengeFileError, match="no such file or folder"):
        iter_cases([tmp_path / "missing"])


def test_iter_cases_accepts_strings(tmp_path):
    (tmp_path / "a.npz").write_bytes(b"")
    assert iter_cases([str(tmp_path)]) == [tmp_path / "a.npz"]
    assert iter_cases([str(tmp_path / "a.npz")]) == [tmp_path / "a.npz"]
