"""Files and folders that appear whole or not at all, and the leftovers of a run that was killed.

A file is written under a hidden temporary name beside its target,
``.<name>.<pid>.partial``, and renamed over the target when complete; a
rename within one folder is atomic, so a reader sees the old file or the new
one, never half of one. An interrupted write (an exception, Ctrl+C, SIGTERM
turned into an exception by the command line) removes its temporary file; one
killed outright (SIGKILL, power loss) leaves it, and :func:`remove_stale` takes
it away on the next run, once its process is gone. A folder is built under a
temporary name and swapped into place (:func:`swap_into_place`).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import FileProblem

_PARTIAL = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)\.partial$")


def partial_path(path: Path) -> Path:
    """The temporary name a write of ``path`` by this process uses."""
    return path.with_name(f".{path.name}.{os.getpid()}.partial")


def _alive(pid: int) -> bool:
    """Whether process ``pid`` may still be writing. A reused pid keeps a stale file (it
    stays hidden, never taken for a result); a live writer's file is never removed."""
    if pid == os.getpid() or os.name == "nt":  # on Windows os.kill(pid, 0) would end it
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale(path: Path) -> list[Path]:
    """Remove the temporary files (or folders) of writes of ``path`` whose process is gone;
    returns them."""
    removed = []
    try:
        siblings = list(path.parent.glob(f".{path.name}.*.partial"))
    except OSError:
        return removed
    for sibling in siblings:
        match = _PARTIAL.match(sibling.name)
        if match and match["name"] == path.name and not _alive(int(match["pid"])):
            if sibling.is_dir() and not sibling.is_symlink():  # a folder output (OME-Zarr)
                shutil.rmtree(sibling, ignore_errors=True)
            else:
                sibling.unlink(missing_ok=True)
            removed.append(sibling)
    return removed


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name one existing file (a hard link, a symlink, another spelling)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def file_problem(path: str | os.PathLike, exc: OSError, action: str = "written") -> FileProblem:
    """The one-line error for an ``OSError`` on ``path``: "<path>: cannot be <action> (<why>)"."""
    return FileProblem(path, f"cannot be {action} ({exc.strerror or exc})")


@contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """Yield the temporary path of a write of ``path``; rename it to ``path`` when the block ends.

    The block may do more between writing the file and its rename (an export
    swaps its sample folder in there). Any exception in the block or in the
    rename, Ctrl+C included, removes the temporary file and propagates as it is;
    a previous file at ``path`` is then untouched.
    """
    path = Path(path)
    tmp = partial_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomically(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(temporary_path)``, then rename the temporary file to ``path``.

    Raises
    ------
    FileProblem
        The file cannot be written (the temporary file is removed; a previous
        file at ``path`` is untouched). Any other exception, Ctrl+C included,
        also removes the temporary file before it propagates.
    """
    path = Path(path)
    try:
        with replacing(path) as tmp:
            write(tmp)
    except OSError as exc:
        raise file_problem(path, exc) from None
    return path


def write_text_atomically(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` whole or not at all (:func:`write_atomically`)."""
    return write_atomically(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def swap_into_place(new: Path, target: Path, old: Path) -> None:
    """Rename ``new`` to ``target``, an existing target first to ``old`` (the caller deletes it).

    When the rename fails, the old target is put back.
    """
    if target.exists() or target.is_symlink():
        os.rename(target, old)
        try:
            os.rename(new, target)
        except OSError:
            os.rename(old, target)
            raise
    else:
        os.rename(new, target)


def check_writable_folder(folder: Path) -> None:
    """Raise a one-line :class:`FileProblem` unless files can be created in ``folder``.

    Tries it (a permission test cannot see a read-only file system, and root
    passes every permission test).
    """
    if not folder.exists():
        raise FileProblem(folder, "does not exist")
    if not folder.is_dir():
        raise FileProblem(folder, "is a file, not a folder")
    probe = partial_path(folder / ".nucleiseg-write-test")
    try:
        probe.touch()
    except OSError as exc:
        raise FileProblem(folder, f"is not writable ({exc.strerror or exc})") from None
    probe.unlink(missing_ok=True)
