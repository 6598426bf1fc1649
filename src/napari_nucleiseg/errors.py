"""Errors that the command line turns into a one-line reason naming the file."""

from __future__ import annotations

from os import PathLike


class NucleisegError(Exception):
    """Base of the errors this package raises on bad input."""


class FileProblem(NucleisegError, ValueError):
    """A file or folder that cannot be used, with the path in the message.

    Parameters
    ----------
    path : path-like
        The offending file or folder.
    reason : str
        What is wrong with it, as a short clause ("does not exist").
    """

    def __init__(self, path: str | PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def one_line(exc: BaseException) -> str:
    """An exception as one line (our errors already name the file): for a notification, or
    the reason of a :class:`FileProblem`."""
    text = (str(exc).strip().splitlines() or [""])[0]
    if isinstance(exc, NucleisegError | ValueError) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
