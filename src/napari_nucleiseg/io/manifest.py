"""The manifest of an export root, ``ROOT/manifest.json``: one entry per exported sample.

::

    {"format": "napari-nucleiseg curated samples", "version": 1,
     "samples": {"<id>": {"source": "/path/or/null", "model": "name or null",
                          "added": 0, "removed": 1, "changed": 2, "unchanged": 40,
                          "nuclei": 42, "exported": "2025-01-01T12:00:00+00:00",
                          "split": "train"}}}

It is rewritten atomically (a temporary file renamed over it), under the root
lock (:func:`~napari_nucleiseg.io.lock.root_lock`), with each export
(:func:`rewriting`) and by :func:`set_split`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from pathlib import Path

from ..errors import FileProblem
from .atomic import replacing, write_atomically
from .lock import root_lock

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "napari-nucleiseg curated samples"
SPLITS = ("train", "validation")

__all__ = ["MANIFEST", "SPLITS", "check_split", "read_manifest", "rewriting", "set_split"]


def check_split(split: str) -> str:
    """Return ``split``; raise ValueError unless it is one of :data:`SPLITS`."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return split


def read_manifest(root: str | Path) -> dict[str, dict]:
    """The manifest's entries, sample id -> entry; empty when there is no manifest.

    Raises
    ------
    FileProblem
        If the manifest exists but is not a manifest this package wrote.
    """
    path = Path(root) / MANIFEST
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FileProblem(path, f"cannot be read as a JSON manifest ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("samples"), dict):
        raise FileProblem(path, 'is not a nucleiseg manifest (no "samples" object)')
    return data["samples"]


def _write(tmp: Path, samples: Mapping[str, dict]) -> None:
    data = {
        "format": MANIFEST_FORMAT,
        "version": 1,
        "samples": {k: samples[k] for k in sorted(samples)},
    }
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    os.chmod(tmp, 0o644)  # whatever the umask: a manifest is meant to be shared


@contextmanager
def rewriting(root: Path, samples: Mapping[str, dict]) -> Iterator[None]:
    """Write the manifest of ``samples`` first; it replaces ROOT's when the block ends.

    Call it holding the root lock. Writing first means that a full disk
    changes nothing; an exception in the block leaves the old manifest.
    ``OSError`` propagates as it is.
    """
    with replacing(root / MANIFEST) as tmp:
        _write(tmp, samples)
        yield


def set_split(root: str | Path, sample_id: str, split: str) -> None:
    """Mark an exported sample as training or validation data in the manifest.

    Raises
    ------
    ValueError
        An unknown split name.
    FileProblem
        The id is not in the manifest, or the manifest cannot be written.
    """
    root = Path(root)
    check_split(split)
    with root_lock(root):
        samples = read_manifest(root)
        if sample_id not in samples:
            raise FileProblem(root / MANIFEST, f"has no sample {sample_id!r}")
        samples[sample_id]["split"] = split
        write_atomically(root / MANIFEST, partial(_write, samples=samples))
