"""The Train dock's plot: training loss per step and validation score per epoch, painted
with QPainter (no plotting library for two curves)."""

from __future__ import annotations

import math

from qtpy.QtCore import QPointF, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget


class LossPlot(QWidget):
    """Training loss per step (line, left scale) and validation DSB score per epoch (dots, 0-1).

    The base model's score is a dashed line, so the gain is seen at a glance.
    """

    def __init__(self, colors: dict[str, str], parent=None):
        super().__init__(parent)
        self._colors = {k: QColor(v) for k, v in colors.items()}
        self.setMinimumHeight(150)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.clear()

    @classmethod
    def themed(cls, theme) -> LossPlot:
        """A plot in the colours of a napari theme (``napari.utils.theme.get_theme(name)``)."""
        text = theme.text.as_hex()
        return cls({
            "grid": theme.foreground.as_hex(), "text": text, "loss": text,
            "score": theme.current.as_hex(), "base": "#e0a030",
        })  # fmt: skip

    def clear(self) -> None:
        """Forget the curves (a new run)."""
        self.losses: list[float] = []
        self.scores: list[tuple[int, float]] = []  # (steps so far, score)
        self.base: float | None = None
        self.total = 1
        self.update()

    def add_step(self, loss: float, total: int) -> None:
        self.losses.append(loss)
        self.total = max(total, len(self.losses), 1)
        self.update()

    def add_score(self, score: float) -> None:
        self.scores.append((len(self.losses), score))
        self.update()

    def set_base(self, score: float | None) -> None:
        self.base = score
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        c = self._colors
        w, h = self.width(), self.height()
        left, right, top, bottom = 34, 30, 18, 6
        pw, ph = max(w - left - right, 1), max(h - top - bottom, 1)
        p.setPen(QPen(c["grid"], 1))
        p.drawRect(left, top, pw, ph)
        finite = [v for v in self.losses if math.isfinite(v)]
        hi = max(finite, default=1.0) or 1.0

        def x(step: float) -> float:
            return left + pw * step / self.total

        def y(frac: float) -> float:
            return top + ph * (1 - min(max(frac, 0.0), 1.0))

        p.setPen(c["text"])
        p.drawText(2, top + 10, f"{hi:.2g}")
        p.drawText(2, top + ph, "0")
        p.drawText(left + pw + 4, top + 10, "1")
        p.drawText(left + pw + 4, top + ph, "0")
        p.setPen(c["loss"])
        p.drawText(left, top - 5, "loss")
        p.setPen(c["score"])
        p.drawText(left + 40, top - 5, "validation score")
        if self.base is not None:
            p.setPen(c["base"])
            p.drawText(left + 160, top - 5, "base model")
            pen = QPen(c["base"], 1, Qt.PenStyle.DashLine)
            p.setPen(pen)
            p.drawLine(QPointF(left, y(self.base)), QPointF(left + pw, y(self.base)))
        if len(self.losses) > 1:
            p.setPen(QPen(c["loss"], 1.5))
            points = [
                QPointF(x(i + 1), y(v / hi)) for i, v in enumerate(self.losses) if math.isfinite(v)
            ]
            p.drawPolyline(QPolygonF(points))
        p.setPen(QPen(c["score"], 2))
        p.setBrush(c["score"])
        dots = [QPointF(x(s), y(v)) for s, v in self.scores]
        if len(dots) > 1:
            p.drawPolyline(QPolygonF(dots))
        for dot in dots:
            p.drawEllipse(dot, 3.0, 3.0)
        p.end()
