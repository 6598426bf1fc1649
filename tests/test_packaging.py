"""The core imports without napari or Qt; the wheel ships the manifest and the samples."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).parents[1]


def test_core_imports_without_napari_or_qt():
    code = (
        "import sys\n"
        "import napari_nucleiseg.io, napari_nucleiseg.metrics, napari_nucleiseg.cli\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'magicgui', 'vispy')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_manifest_validates():
    npe2 = Path(sys.executable).with_name("npe2")
    out = subprocess.run(
        [str(npe2), "validate", "napari-nucleiseg"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.skipif(not (REPO / "pyproject.toml").is_file(), reason="needs the source tree")
def test_wheel_ships_manifest_and_samples(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
    )
    (wheel,) = tmp_path.glob("napari_nucleiseg-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        manifest = z.read("napari_nucleiseg/napari.yaml").decode()
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        entry = z.read(entry_points).decode()
    assert manifest == (REPO / "napari.yaml").read_text()
    assert "[napari.manifest]" in entry and "napari_nucleiseg:napari.yaml" in entry
    assert sum(n.startswith("napari_nucleiseg/samples/") and n.endswith(".png") for n in names) > 90
