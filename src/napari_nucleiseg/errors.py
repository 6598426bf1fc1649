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
