"""Widget lifetime for worker callbacks and viewer callbacks (Qt glue, no napari logic)."""

from __future__ import annotations

import functools
import threading

from qtpy.QtCore import QEvent, QObject


class Lifetime:
    """Whether the widget's Qt side still exists; when it goes, running work is told to stop.

    Workers report back after the viewer may have closed; their callbacks check
    ``alive`` first. Connected to ``destroyed``, this object holds no reference
    to the widget.
    """

    def __init__(self):
        self.alive = True
        self.stops: list[threading.Event] = []

    def end(self, *_) -> None:
        self.alive = False
        for stop in self.stops:
            stop.set()


def while_alive(method):
    """Skip a worker callback once the widget is gone."""

    @functools.wraps(method)
    def wrapper(self, *args):
        if self._life.alive:
            return method(self, *args)
        return None

    return wrapper


class CloseWatcher(QObject):
    """Calls back when the widget is closed or taken out of its dock."""

    def __init__(self, callback):
        super().__init__()
        self._callback = callback

    def eventFilter(self, obj, event):  # noqa: N802 (Qt's name)
        closing = event.type() == QEvent.Type.Close
        undocked = event.type() == QEvent.Type.ParentChange and obj.parent() is None
        if closing or undocked:
            self._callback()
        return False
