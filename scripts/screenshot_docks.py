"""Render all three docks side by side in a 1280x800 window and save docs/docks_1280x800.png.

Run under a display: ``xvfb-run -a python scripts/screenshot_docks.py``. Opens
the shipped fluorescence sample through File > Open Sample's code, the docks
through the Plugins menu's code, segments with the shipped default model on the
CPU, and hands the result to Correct masks: a laptop screen with the whole loop.
Prints each dock's minimum height and the window's size.
"""

from __future__ import annotations

from pathlib import Path

import napari
from screenshots import DOCS, click_segment, save_window  # beside this script

PLUGIN = "napari-nucleiseg"


def docks_screenshot(out: Path = DOCS / "docks_1280x800.png") -> Path:
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1280, 800)
    image, truth = viewer.open_sample(PLUGIN, "fluorescence")
    truth.visible = False
    docks = {
        name: viewer.window.add_plugin_dock_widget(PLUGIN, name)[1]
        for name in ("Segment nuclei", "Correct masks", "Train on curated data")
    }
    segment = docks["Segment nuclei"]
    click_segment(segment)
    nuclei = viewer.layers[f"{image.name} nuclei"]
    nuclei.contour = 1
    docks["Correct masks"]._layer_combo.value = nuclei
    viewer.layers.selection.active = nuclei
    viewer.reset_view()
    size = viewer.window._qt_window.size()
    for name, widget in docks.items():  # what a dock needs at the least, title bar included
        print(f"{name}: minimum height {widget.native.parent().minimumSizeHint().height()} px")
    print(f"window with all three docks: {size.width()}x{size.height()}")
    if (size.width(), size.height()) != (1280, 800):
        raise SystemExit(f"the docks grew the window to {size.width()}x{size.height()}")
    return save_window(viewer, out)


if __name__ == "__main__":
    print(docks_screenshot())
