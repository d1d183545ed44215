"""Writing files so that a crash or a kill never leaves a half-written file behind.

The data go to a temporary file in the destination folder (same file system, so the rename is
atomic), optionally flushed to disk, and then replace the destination in one ``os.replace``.
Until that rename the previous file is untouched; a writer killed earlier leaves at most a
hidden ``.<name>.<random>.tmp`` file, which readers never mistake for data.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

TEMP_SUFFIX = ".tmp"


def write_atomically(
    path: str | os.PathLike,
    write: Callable[[BinaryIO], None],
    durable: bool = True,
    temp_suffix: str = TEMP_SUFFIX,
) -> Path:
    """Call ``write(stream)`` on a temporary file, then rename it to ``path``.

    ``durable``: flush and fsync the file and its folder (a power cut after the return keeps
    the new file); caches that can recompute their data pass False. ``temp_suffix`` ends the
    temporary file's name (some writers pick the format from it, e.g. ``".nii.gz"``; then the
    name ends in ``.tmp<suffix>``). Missing folders are created. On any failure ``path`` keeps
    its previous content, the temporary file is removed and the error is raised.
    """
    path = Path(path)
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    suffix = temp_suffix if temp_suffix == TEMP_SUFFIX else TEMP_SUFFIX + temp_suffix
    handle, temp_name = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=suffix)
    os.close(handle)  # reopened by name: some writers want the stream's name to be a path
    try:
        with open(temp_name, "wb") as stream:
            write(stream)
            if durable:
                stream.flush()
                os.fsync(stream.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    if durable:
        fsync_folder(folder)
    return path


def write_file_atomically(
    path: str | os.PathLike,
    write_to: Callable[[Path], None],
    temp_suffix: str = TEMP_SUFFIX,
) -> Path:
    """Like :func:`write_atomically` for writers that want a file name, not a stream.

    ``write_to(temp_path)`` must write the complete file at ``temp_path``; it is then flushed
    to disk and renamed to ``path``.
    """
    with replacing_atomically(path, temp_suffix) as temp_path:
        write_to(temp_path)
    return Path(path)


@contextmanager
def replacing_atomically(path: str | os.PathLike, temp_suffix: str = TEMP_SUFFIX) -> Iterator[Path]:
    """A temporary file name beside ``path``, renamed to ``path`` when the block succeeds.

    The block writes the complete file at the yielded path (for example chunk by chunk inside
    a generator). When the block ends normally the file is flushed to disk and replaces
    ``path``; when it raises, or a generator holding it is closed, the temporary file is
    removed and ``path`` keeps its previous content.
    """
    path = Path(path)
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    suffix = temp_suffix if temp_suffix == TEMP_SUFFIX else TEMP_SUFFIX + temp_suffix
    handle, temp_name = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=suffix)
    os.close(handle)
    try:
        yield Path(temp_name)
        descriptor = os.open(temp_name, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    fsync_folder(folder)


def is_temporary(path: Path) -> bool:
    """Whether ``path`` is a leftover temporary file of this module (hidden, ``.tmp`` inside)."""
    return path.name.startswith(".") and TEMP_SUFFIX in path.name


def fsync_folder(folder: Path) -> None:
    """Make a rename durable where the platform allows opening folders (POSIX)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
