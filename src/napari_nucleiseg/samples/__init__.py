"""Small real DSB2018 stage-1 samples shipped with the package (CC0, BBBC038v1).

Each is a stage-1 sample folder read with :func:`napari_nucleiseg.io.read_sample`.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).parent

#: kind -> sample id
SAMPLES = {
    "fluorescence": "0bf4b144167694b6846d584cf52c458f34f28fcae75328a2a096c8214e01c0d0",
    "histology": "4ca5081854df7bbcaa4934fcf34318f82733a0f8c05b942c2265eea75419d62f",
}


def sample_folder(kind: str) -> Path:
    """The folder of a shipped sample ("fluorescence" or "histology")."""
    try:
        return ROOT / SAMPLES[kind]
    except KeyError:
        raise ValueError(f"unknown sample {kind!r}; choose from {', '.join(SAMPLES)}") from None
