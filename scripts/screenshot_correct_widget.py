"""Render the "Correct masks" widget at work and save docs/correct_widget.png.

Run under a display: ``xvfb-run -a python scripts/screenshot_correct_widget.py``.
Opens the shipped H&E sample, makes a few corrections (a merge, a split, a
deletion, picks pending) so that the change count shows, and grabs the window.
"""

from __future__ import annotations

from pathlib import Path

import napari
import numpy as np
from scipy import ndimage as ndi
from screenshots import DOCS, save_window, settle  # beside this script

from napari_nucleiseg.samples import sample_folder


def _deepest(labels: np.ndarray, label: int) -> tuple[float, float]:
    depth = ndi.distance_transform_edt(labels == label)
    r, c = np.unravel_index(np.argmax(depth), depth.shape)
    return float(r), float(c)


def correct_widget_screenshot(out: Path = DOCS / "correct_widget.png") -> Path:
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1400, 900)
    folder = sample_folder("histology")
    viewer.open(str(folder), plugin="napari-nucleiseg")
    _, widget = viewer.window.add_plugin_dock_widget("napari-nucleiseg", "Correct masks")
    labels = widget.layer
    data = labels.data.copy()
    sizes = np.bincount(data.ravel())
    sizes[0] = 0
    big = [int(i) for i in np.argsort(sizes)[::-1][:6]]
    widget.delete([big[5]])
    # a split along the long axis of the largest nucleus
    rows, cols = np.nonzero(data == big[0])
    r = float(round(rows.mean()))
    widget.split_along_line([(r, cols.min() - 2.0), (r, cols.max() + 2.0)])
    # merge two touching nuclei, if any
    a, b = data[:, :-1], data[:, 1:]
    touch = (a != b) & (a != 0) & (b != 0)
    if touch.any():
        widget.merge([int(a[touch][0]), int(b[touch][0])])
    widget.key_action("split", _deepest(data, big[1]))  # one seed picked, the next pending
    widget._root.value = Path.home() / "curated"
    labels.opacity = 0.55
    labels.contour = 0
    viewer.layers.selection.active = labels
    settle()
    viewer.reset_view()
    return save_window(viewer, out)


if __name__ == "__main__":
    print(correct_widget_screenshot())
