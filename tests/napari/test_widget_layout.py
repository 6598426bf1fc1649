"""The docks fit a laptop screen: all three side by side in a 1280x800 window, nothing cut
off, and no status line (a 64-hex sample id, a long path) widens a dock."""

from __future__ import annotations

import pytest
from qtpy.QtWidgets import QLabel, QPushButton, QScrollArea
from superqt import QCollapsible

from conftest import open_dock

DOCKS = ("Segment nuclei", "Correct masks", "Train on curated data")
UNBREAKABLE = "exported to /" + "0123456789abcdef" * 16


def scroll_area(widget) -> QScrollArea:
    (area,) = widget.native.findChildren(QScrollArea)
    return area


@pytest.mark.parametrize("name", DOCKS)
def test_a_long_status_line_does_not_widen_the_dock(name, make_napari_viewer, qtbot):
    widget = open_dock(make_napari_viewer(show=True), name)
    native = widget.native
    qtbot.waitExposed(native)
    before = native.sizeHint().width()
    widget._status.value = UNBREAKABLE
    qtbot.wait(20)
    assert native.sizeHint().width() <= before


def test_three_docks_fit_a_1280x800_window(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(1280, 800)
    docks = [open_dock(viewer, name) for name in DOCKS]
    for widget in docks:  # open every section: what they hold must fit too
        for fold in widget.native.findChildren(QCollapsible):
            fold.expand(animate=False)
    qtbot.wait(300)
    assert (window.width(), window.height()) == (1280, 800)  # the docks did not grow it
    for widget in docks:
        area = scroll_area(widget)
        content = area.widget()
        assert (
            area.viewport().width() >= content.minimumSizeHint().width()
        )  # nothing cut at the right
        assert content.width() <= area.viewport().width()
        assert area.height() >= 150  # a few rows of each dock show; the rest scrolls
        buttons = content.findChildren(QPushButton)
        lines = [label for label in content.findChildren(QLabel) if not label.wordWrap()]
        shown = [w for w in (*buttons, *lines) if w.isVisibleTo(content) and w.text()]
        assert len(shown) > 3
        for w in shown:
            assert w.width() >= w.minimumSizeHint().width(), f"{w.text()!r} is cut off"
