"""Render a folder segmented from the Segment dock and save docs/segment_folder.png.

Run under a display: ``xvfb-run -a -s "-screen 0 1920x1200x24" python
scripts/screenshot_folder.py``. Copies the shipped samples' images and the one of
tests/data into a temporary folder, segments it with the shipped default model on the
CPU through "Segment a folder" (TIFF labels, QuPath GeoJSON, measurements), and shows
the results under the slider, on the second image.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication, QScrollArea
from screenshots import DOCS, save_window, settle  # beside this script
from superqt import QCollapsible

from napari_nucleiseg.samples import SAMPLES, sample_folder

PLUGIN = "napari-nucleiseg"
TESTS_DATA = Path(__file__).parents[1] / "tests" / "data" / "stage1_fixed"


def folder_screenshot(out: Path = DOCS / "segment_folder.png") -> Path:
    tmp = Path(tempfile.mkdtemp())
    images = tmp / "plate"
    images.mkdir()
    for folder in [sample_folder(k) for k in SAMPLES] + sorted(TESTS_DATA.iterdir()):
        shutil.copy(folder / "images" / f"{folder.name}.png", images / f"{folder.name[:8]}.png")
    viewer = napari.Viewer(show=True)
    window = viewer.window._qt_window
    window.resize(1500, 950)
    _, segment = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment nuclei")
    segment._device.value = "cpu"
    panel = segment.folder_panel
    panel.folder.value = images
    panel.output.value = tmp / "plate_nuclei"
    panel.formats["geojson"].value = True
    for fold in panel.native.findChildren(QCollapsible):
        fold.expand(animate=False)
    panel.run()
    while panel._worker is not None:
        QApplication.processEvents()
    viewer.dims.set_current_step(0, 1)
    viewer.reset_view()
    settle()

    (area,) = segment.native.findChildren(QScrollArea)
    area.ensureWidgetVisible(panel.native, 0, 0)
    path = save_window(viewer, out)
    shutil.rmtree(tmp, ignore_errors=True)
    return path


if __name__ == "__main__":
    print(folder_screenshot())
