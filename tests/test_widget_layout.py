"""Every dock's status line wraps instead of widening the dock: a 64-hex sample id or a
long path in it cannot break, and a dock as wide as that would hide half the viewer."""

from __future__ import annotations

import pytest

from napari_nucleiseg._napari.correct_widget import CorrectWidget
from napari_nucleiseg._napari.segment_widget import SegmentWidget
from napari_nucleiseg._napari.train_widget import TrainWidget

UNBREAKABLE = "exported to /" + "0123456789abcdef" * 16


@pytest.mark.parametrize("widget_class", [SegmentWidget, CorrectWidget, TrainWidget])
def test_a_long_status_line_does_not_widen_the_dock(widget_class, make_napari_viewer, qtbot):
    widget = widget_class(make_napari_viewer())
    native = widget.native
    native.show()
    qtbot.waitExposed(native)
    before = native.sizeHint().width()
    widget._status.value = UNBREAKABLE
    qtbot.wait(20)
    assert native.sizeHint().width() <= before
    native.close()
