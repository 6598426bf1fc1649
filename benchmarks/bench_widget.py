"""The "Segment nuclei" widget in a live viewer: click-to-labels time and event-loop stalls.

Run under a display: ``xvfb-run -a python benchmarks/bench_widget.py [--model NAME_OR_PATH]``.
On a 1024x1024 image (the fluorescence sample tiled 4x4) it prints one table:
the time from a click on "Segment nuclei" to the Labels layer (first click,
with the model load, and a second one), the time to re-run post-processing
after a threshold moves, how long Cancel takes to stop a run, and for each the
longest gap between ticks of a 10 ms QTimer, i.e. the longest freeze of
napari's event loop. ``--screenshot PATH`` instead renders the docked widget
beside a segmented sample and saves the window as a PNG.

Without ``--model`` it uses the shipped default model.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


class StallMeter:
    """The longest gap between ticks of a 10 ms QTimer since :meth:`reset`."""

    def __init__(self):
        from qtpy.QtCore import QTimer

        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(self._tick)
        self.reset()
        self.timer.start()

    def reset(self) -> None:
        self.last, self.worst = time.perf_counter(), 0.0

    def _tick(self) -> None:
        now = time.perf_counter()
        self.worst, self.last = max(self.worst, now - self.last), now


def wait_until(condition, timeout: float = 600.0) -> float:
    """Run the Qt event loop until ``condition()``; return the seconds it took."""
    from qtpy.QtCore import QEventLoop, QTimer

    start = time.perf_counter()
    loop = QEventLoop()
    check = QTimer()
    check.setInterval(2)
    check.timeout.connect(
        lambda: (condition() or time.perf_counter() - start > timeout) and loop.quit()
    )
    check.start()
    loop.exec()
    check.stop()
    if not condition():
        raise TimeoutError(f"not done after {timeout} s")
    return time.perf_counter() - start


def setup(model: str | None, folder: Path):
    """A shown viewer with the docked widget, and the model chosen."""
    import napari

    from napari_nucleiseg._napari.segment_widget import SegmentWidget
    from napari_nucleiseg.models import DEFAULT_MODEL, shipped_models

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1400, 900)
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment nuclei")
    source = model or DEFAULT_MODEL
    if source in shipped_models():
        widget._model.value = source
    else:
        widget.load_checkpoint(source)
    return viewer, widget


def click_and_wait(widget) -> float:
    widget._run.native.click()
    return wait_until(lambda: widget._worker is None)


def benchmark(args, folder: Path) -> None:
    from napari_nucleiseg.io import read_sample
    from napari_nucleiseg.samples import sample_folder

    viewer, widget = setup(args.model, folder)
    from scipy import ndimage as ndi

    sample = read_sample(sample_folder("fluorescence"))
    reps = (args.size // sample.image.shape[0] + 1, args.size // sample.image.shape[1] + 1)
    crop = (slice(0, args.size), slice(0, args.size))
    layer = viewer.add_image(np.tile(sample.image[..., 0], reps)[crop], name="tiled")
    truth = ndi.label(np.tile(sample.labels, reps)[crop] > 0)[0]  # touching copies merge
    widget._reference.value = viewer.add_labels(truth, name="tiled masks", visible=False)
    widget._device.value = "cpu"
    wait_until(lambda: True)
    meter, rows = StallMeter(), []

    for what in ("click to Labels layer (first: loads the model)", "click to Labels layer"):
        meter.reset()
        seconds = click_and_wait(widget)
        assert f"{layer.name} nuclei" in viewer.layers, widget._status.value
        rows.append((what, seconds, meter.worst))
    labels = viewer.layers[f"{layer.name} nuclei"]
    n = int(labels.data.max())
    wait_until(lambda: "DSB2018" in widget._score.value)
    score = widget._score.value.replace("<b>", "").replace("</b>", "").replace("<br>", "; ")

    for value in (widget._prob.value + 0.1, widget._prob.value - 0.1):
        before = labels.data
        meter.reset()
        start = time.perf_counter()
        widget._prob.value = round(value, 2)
        wait_until(lambda b=before: widget._relabel_worker is None and labels.data is not b)
        rows.append(("threshold moved to post-processed labels", time.perf_counter() - start,
                     meter.worst))  # fmt: skip
        wait_until(lambda: "DSB2018" in widget._score.value)
        rows.append(("threshold moved to new score (in a worker)", time.perf_counter() - start,
                     meter.worst))  # fmt: skip

    widget._tta.value = True
    widget._run.native.click()
    wait_until(lambda: widget._progress.value > 0 or time.perf_counter() < 0)  # first tile done
    time.sleep(0.3)  # inside the next forward pass
    meter.reset()
    widget._cancel.native.click()
    rows.append(("Cancel to stopped (TTA run)", wait_until(lambda: widget._worker is None),
                 meter.worst))  # fmt: skip

    import torch

    print(f"model: {widget._model.value}; image {args.size}x{args.size} grey uint8, "
          f"{n} nuclei ({score}); CPU, torch {torch.__version__}, {torch.get_num_threads()} threads")  # fmt: skip
    print(f"| {'step':<48} | seconds | longest event-loop stall (ms) |")
    print(f"| {'-' * 48} | ------- | ----------------------------- |")
    for what, seconds, stall in rows:
        print(f"| {what:<48} | {seconds:7.3f} | {1000 * stall:29.0f} |")
    viewer.close()


def screenshot(args, folder: Path) -> None:
    from napari_nucleiseg._napari import sample_data

    viewer, widget = setup(args.model, folder)
    for data, kwargs, kind in sample_data.fluorescence():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    image, masks = viewer.layers[0], viewer.layers[1]
    image.name, masks.name = "nuclei sample", "nuclei sample masks"
    masks.visible = False
    viewer.layers.selection.active = image
    widget._reference.value = masks
    click_and_wait(widget)
    wait_until(lambda: "DSB2018" in widget._score.value)
    labels = viewer.layers["nuclei sample nuclei"]
    labels.contour = 2
    viewer.reset_view()
    wait_until(lambda: True)
    time.sleep(0.2)
    wait_until(lambda: True)
    viewer.window._qt_window.grab().save(str(args.screenshot))
    print(args.screenshot)
    viewer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="shipped model name or checkpoint path")
    parser.add_argument("--size", type=int, default=1024, help="image side (pixels)")
    parser.add_argument("--screenshot", type=Path, help="save a screenshot here instead")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        (screenshot if args.screenshot else benchmark)(args, Path(tmp))


if __name__ == "__main__":
    main()
