"""Render the measurements of a segmented sample in napari's features table and save
docs/measurements_table.png.

Run under a display: ``xvfb-run -a -s "-screen 0 1920x1200x24" python
scripts/screenshot_measurements.py``. Opens the shipped fluorescence sample through the
plugin's reader with a pixel size of 0.5 µm, segments it with the shipped default model
on the CPU, clicks "Show table" in the Segment dock's "Measurements and outputs" section
and moves the cursor over a nucleus, so that its row is highlighted.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import napari
import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QScrollArea
from screenshots import DOCS, click_segment, save_window, settle  # beside this script

from napari_nucleiseg._napari.results_panel import FEATURES_TABLE
from napari_nucleiseg.samples import sample_folder

PLUGIN = "napari-nucleiseg"


def measurements_screenshot(out: Path = DOCS / "measurements_table.png") -> Path:
    viewer = napari.Viewer(show=True)
    window = viewer.window._qt_window
    window.resize(1900, 1100)
    image, truth = viewer.open(sample_folder("fluorescence"), plugin=PLUGIN)
    image.scale = truth.scale = (0.5, 0.5)
    truth.visible = False
    segment_dock, segment = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment nuclei")
    segment._device.value = "cpu"
    click_segment(segment)
    nuclei = viewer.layers[f"{image.name} nuclei"]
    nuclei.contour = 1
    panel = segment.results
    panel.table_button.native.click()  # napari's features table, on the labels
    table_dock, _ = viewer.window.add_plugin_dock_widget(*FEATURES_TABLE)
    window.splitDockWidget(segment_dock, table_dock, Qt.Orientation.Horizontal)
    settle()
    viewer.reset_view()
    label = int(np.bincount(nuclei.data.ravel())[1:].argmax()) + 1  # the largest nucleus
    inside = np.argwhere(nuclei.data == label)
    pixel = inside[len(inside) // 2]
    panel._follow_cursor(nuclei, SimpleNamespace(position=nuclei.data_to_world(pixel)))
    (area,) = segment.native.findChildren(QScrollArea)  # the dock scrolls to the section
    area.ensureWidgetVisible(panel.native, 0, 0)
    return save_window(viewer, out)


if __name__ == "__main__":
    print(measurements_screenshot())
