"""The lock of an export root: its writers take turns, and a killed holder frees it."""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .atomic import file_problem

if os.name == "nt":
    import msvcrt
else:
    import fcntl

#: The root's lock file (empty; kept, as deleting a lock file under its users is unsafe).
LOCK_FILE = ".nucleiseg.lock"

__all__ = ["LOCK_FILE", "lock_open_file", "root_lock"]


def lock_open_file(fd: int, *, wait: bool) -> bool:
    """Take the exclusive OS lock of an open file; False when another holds it and not ``wait``.

    An OS lock (``flock``, ``msvcrt.locking`` on Windows) belongs to the open
    file: closing it, or the death of its process, however killed, frees it.
    """
    if os.name != "nt":
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
    while True:  # msvcrt cannot wait for long: poll
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EDEADLOCK):
                raise
            if not wait:
                return False
        time.sleep(0.01)


@contextmanager
def root_lock(root: str | Path) -> Iterator[None]:
    """Hold the lock of an export root: its writers take turns inside this block.

    Whoever renames a sample into ROOT or rewrites its manifest holds it, so an
    id is checked and taken at once and no manifest entry is lost. It is an OS
    lock on ``ROOT/.nucleiseg.lock``, freed when its holder exits or is killed.

    Raises
    ------
    FileProblem
        The lock file cannot be created (e.g. a read-only root).
    """
    path = Path(root) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise file_problem(path, exc, "created") from None
    try:
        lock_open_file(fd, wait=True)
        yield
    finally:
        os.close(fd)
