"""Atomic file writes: a temporary name beside the target, then a rename.

A reader never sees a half-written file, and a failure leaves an earlier file
whole. The temporary file gets the permissions a plain ``open()`` would give
under the process's umask (``tempfile.mkstemp`` makes it 0600, which would leave
a survey's outputs readable by their owner only).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_output", "atomic_path", "atomic_write_bytes", "default_file_mode"]


def default_file_mode() -> int:
    """Permissions of a new file under this process's umask (0o644 under umask 022)."""
    return 0o666 & ~_umask()


def _umask() -> int:
    """The process's umask, read without changing it where the system allows."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    current = os.umask(0o022)  # no /proc: set and restore (not atomic across threads)
    os.umask(current)
    return current


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed to ``path`` on success.

    For writers that take a path (astropy, torch). The temporary file is removed
    when the block raises.
    """
    final = Path(path)
    handle, name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
    temporary = Path(name)
    try:
        os.fchmod(handle, default_file_mode())
        os.close(handle)
        yield temporary
        os.replace(temporary, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary stream to a temporary file beside ``path``, renamed to it when whole.

    The data are flushed to disk before the rename; on any failure the temporary
    file is removed and an earlier ``path`` stays as it was.
    """
    with atomic_path(path) as temporary, open(temporary, "wb") as stream:
        yield stream
        stream.flush()
        os.fsync(stream.fileno())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename."""
    with atomic_output(path) as stream:
        stream.write(data)
