"""Render the "Segment nuclei" widget after a run and save docs/segment_widget.png.

Run under a display: ``xvfb-run -a python scripts/screenshot_segment_widget.py``.
Opens the shipped histology (H&E) sample with its truth, segments it with the model
list's "auto" (which picks the H&E model for it) on the CPU, scores it against the
truth, and grabs the window.
"""

from __future__ import annotations

from pathlib import Path

import napari
from screenshots import DOCS, click_segment, save_window  # beside this script

from napari_nucleiseg._napari import sample_data


def segment_widget_screenshot(out: Path = DOCS / "segment_widget.png") -> Path:
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1400, 900)
    for data, kwargs, kind in sample_data.histology():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    truth = next(layer for layer in viewer.layers if layer.name.endswith("masks"))
    truth.visible = False
    _, widget = viewer.window.add_plugin_dock_widget("napari-nucleiseg", "Segment nuclei")
    widget._image.value = viewer.layers[0]
    widget._reference.value = truth
    click_segment(widget)
    result = viewer.layers[f"{viewer.layers[0].name} nuclei"]
    result.contour = 1
    viewer.layers.selection.active = result
    viewer.reset_view()
    return save_window(viewer, out)


if __name__ == "__main__":
    print(segment_widget_screenshot())
