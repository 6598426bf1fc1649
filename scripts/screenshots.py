"""Render the plugin in napari and save the screenshots that docs/ and the README show.

Run under a display: ``xvfb-run -a python scripts/screenshots.py [ROOT]``.
ROOT defaults to the stage-1 training set beside the repository. ``settle``,
``click_segment`` and ``save_window`` also serve the widget screenshot scripts beside this one.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

DOCS = Path(__file__).parents[1] / "docs"
DEFAULT_ROOT = Path(__file__).parents[2] / "shared" / "data" / "dsb2018" / "stage1_train"


def settle(seconds: float = 0.5) -> None:
    """Let Qt handle its events (drawing, worker signals) for a while."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        QApplication.processEvents()
        time.sleep(0.02)


def click_segment(widget, seconds: float = 120) -> None:
    """Click a Segment nuclei dock's button (once "auto" has judged the image and enabled it)
    and let Qt run until the segmentation is done."""
    deadline = time.perf_counter() + seconds
    while widget._model.looking and time.perf_counter() < deadline:
        settle(0.1)
    widget._run.native.click()
    if widget._worker is None:
        raise SystemExit("the Segment button did not start a run (no image or model?)")
    while widget._worker is not None and time.perf_counter() < deadline:
        settle(0.1)
    if widget._worker is not None:
        raise SystemExit(f"segmentation did not finish within {seconds:g} s")


def save_window(viewer: napari.Viewer, out: Path) -> Path:
    """Draw, save the whole window (canvas, layer list and docks) to ``out``, close the viewer."""
    settle()
    out.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(out), canvas_only=False)
    viewer.close()
    return out


def reader_screenshot(root: Path) -> Path:
    """A stage-1 root open in napari, on an H&E sample, masks as contours."""
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1200, 800)
    image, labels = viewer.open(root, plugin="napari-nucleiseg")
    ids = image.metadata["stage1_ids"]
    colour = "4ca5081854df7bbcaa4934fcf34318f82733a0f8c05b942c2265eea75419d62f"
    viewer.dims.set_current_step(0, ids.index(colour) if colour in ids else 0)
    labels.contour = 2
    viewer.reset_view()
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    camera.zoom *= 2.2
    camera.center = (0, 128, 160)
    return save_window(viewer, DOCS / "reader_root.png")


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_ROOT
    print(reader_screenshot(root))
