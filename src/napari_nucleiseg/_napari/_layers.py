"""Layer plumbing for the segmentation widget: planes in, labels and maps out, references;
and the layout helpers of every dock: long names, status lines, foldable sections, scrolling.

Glue only: which planes of an image layer to read, and how results become
layers that keep the image's geometry and replace their previous version.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from magicgui.widgets import Container
from napari.layers import Image, Labels, Layer
from qtpy.QtCore import QEvent, QSize, Qt
from qtpy.QtWidgets import QComboBox, QFrame, QScrollArea, QSizePolicy, QVBoxLayout, QWidget
from superqt import QCollapsible

from ..metrics import DatasetScore, score_dataset
from ..pipeline import Index, leading_shape
from . import _metadata as meta

_GEOMETRY = ("scale", "translate", "rotate", "shear", "affine", "units", "axis_labels")


def narrow(*combos) -> None:
    """Keep magicgui combo boxes of long names (64-hex sample ids) from widening the dock."""
    for combo in combos:
        combo.native.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        combo.native.setMinimumContentsLength(16)


def text_lines(*labels) -> None:
    """Left-aligned, wrapping magicgui labels that never widen the dock: their width hint is
    ignored, since a long unbreakable line (a 64-hex sample id, a path) cannot wrap."""
    for label in labels:
        label.native.setWordWrap(True)
        label.native.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        label.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)


def rows(*widgets) -> Container:
    """Widgets beside their labels. A dock's top level is unlabelled, so that its sections,
    buttons and status lines span the dock's whole width."""
    box = Container(widgets=list(widgets), labels=True)
    box.margins = (0, 0, 0, 0)
    return box


def section(title: str, widgets: Sequence, expanded: bool = True) -> Container:
    """Labelled widgets that fold under ``title`` (superqt's QCollapsible), so that settings
    changed now and then take one line of a dock until opened."""
    body = rows(*widgets)
    box = Container(widgets=[body], labels=False)  # body stays a child: reset_choices reaches it
    box.margins = (0, 0, 0, 0)
    fold = QCollapsible(title, expandedIcon="▼", collapsedIcon="▶")
    fold.setDuration(0)
    fold.layout().setContentsMargins(0, 0, 0, 0)
    fold.addWidget(body.native)  # takes body out of box's layout
    box.native.layout().addWidget(fold)
    if expanded:
        fold.expand(animate=False)
    return box


def scroll(container: Container) -> None:
    """Put what ``container`` holds in a vertical scroll area inside its own widget, so that
    docks fit a laptop screen side by side. napari docks ``container.native``, which leaves
    out the scroll area of magicgui's ``scrollable=True`` (a parent of ``native``)."""
    native = container.native
    content = QWidget()
    content.setLayout(native.layout())  # the layout moves, with every widget in it
    content.layout().addStretch(1)
    area = _VerticalScroll()
    area.setWidget(content)
    outer = QVBoxLayout(native)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(area)


class _VerticalScroll(QScrollArea):
    """A scroll area that scrolls only up and down: as wide as its content needs (nothing is
    cut at the right), and as short as a few rows (docks share a laptop screen's height)."""

    MIN_HEIGHT = 180

    def __init__(self):
        super().__init__()
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 (Qt's name)
        if obj is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            self.updateGeometry()  # e.g. a section opened: the dock takes the new width
        return super().eventFilter(obj, event)

    def minimumSizeHint(self) -> QSize:  # noqa: N802 (Qt's name)
        content = self.widget().minimumSizeHint()
        margins = self.contentsMargins()  # the frame, as the theme's style sheet draws it
        extra = self.verticalScrollBar().sizeHint().width() + margins.left() + margins.right()
        return QSize(content.width() + extra, min(content.height(), self.MIN_HEIGHT))


def elide(text: str, width: int = 36) -> str:
    """``text`` cut in the middle to ``width`` characters: both ends of a 64-hex sample id
    or of a path tell one from another, and a cut at the end hides one of them."""
    text = str(text)
    if len(text) <= width:
        return text
    head = (width - 1) // 2
    return f"{text[:head]}…{text[len(text) - (width - 1 - head) :]}"


def show_line(label, text: str) -> None:
    """Show ``text`` on a status line with every word too long to wrap (a sample id, a path)
    cut in the middle; the tooltip then holds the line in full."""
    short = re.sub(r"\S{37,}", lambda word: elide(word.group()), text)
    label.value = short
    label.tooltip = text if short != text else ""


def image_data(layer: Image):
    """The full-resolution data of an image layer (level 0 of a multiscale one)."""
    return layer.data[0] if layer.multiscale else layer.data


def is_large(layer: Image) -> bool:
    """Whether a layer's planes are over ``large.LARGE_PIXELS``: segmented in bounded memory
    (:func:`napari_nucleiseg.batch.is_large` of its planes' shape)."""
    from ..batch import is_large as plane_is_large

    shape = image_data(layer).shape
    spatial = len(shape) - (1 if layer.rgb else 0)
    return plane_is_large(shape[spatial - 2 : spatial])


def label_pyramid(labels, smallest: int = 256) -> list:
    """Lazy levels of labels on disk for a multiscale Labels layer: every other pixel of the
    level before (labels stay labels), down to ``smallest`` pixels a side."""
    import dask.array as da

    levels = [da.from_array(labels, chunks=labels.chunks)]
    while min(levels[-1].shape) // 2 >= smallest:
        levels.append(levels[-1][::2, ::2])
    return levels


def image_lead(layer: Image) -> tuple[int, ...]:
    """The leading (non-spatial) shape of an image layer: () for a 2-D image."""
    return leading_shape(image_data(layer).shape, layer.rgb)


def plane_on_screen(viewer, layer: Image) -> Index:
    """Index over the leading dimensions of the plane of ``layer`` shown in ``viewer``."""
    lead = image_lead(layer)
    coords = layer.world_to_data(viewer.dims.point)[: len(lead)]
    return tuple(int(min(max(round(c), 0), n - 1)) for c, n in zip(coords, lead))


def geometry(source: Layer) -> dict:
    """The world transform of ``source`` as layer keyword arguments."""
    return {k: getattr(source, k) for k in _GEOMETRY if hasattr(source, k)}


def _assemble(
    layer: Layer | None,
    lead: tuple[int, ...],
    planes: Sequence[Index],
    values: np.ndarray,
) -> np.ndarray:
    """A full-stack array holding ``values`` at ``planes``, other planes from ``layer`` or 0."""
    full_shape = (*lead, *values.shape[1:])
    if len(planes) == int(np.prod(lead, dtype=int)):
        return values.reshape(full_shape)
    base = None
    if layer is not None and tuple(layer.data.shape) == full_shape:
        base = np.asarray(layer.data)
        dtype = np.result_type(base.dtype, values.dtype)
        base = base.astype(dtype, copy=True)
    if base is None:
        base = np.zeros(full_shape, values.dtype)
    for index, value in zip(planes, values):
        base[index] = value
    return base


def put_layer(
    viewer,
    kind: type[Layer],
    name: str,
    source: Image,
    planes: Sequence[Index],
    values: np.ndarray,
    metadata: dict | None = None,
    **kwargs,
) -> Layer:
    """Show ``values`` (one per plane) as layer ``name``, replacing its data if it exists.

    Planes not in ``planes`` keep what an existing layer of the same shape holds
    (0 for a new one). The layer takes the source's scale, translate and other
    transforms, and ``metadata`` (see :mod:`._metadata`) before its data changes.
    """
    metadata = {meta.OUTPUT: True, **(metadata or {})}
    existing = viewer.layers[name] if name in viewer.layers else None
    if existing is not None and not isinstance(existing, kind):
        existing = None
    data = _assemble(existing, image_lead(source), planes, values)
    if existing is None:
        add = viewer.add_labels if kind is Labels else viewer.add_image
        return add(data, name=name, metadata=metadata, **geometry(source), **kwargs)
    for key, value in geometry(source).items():
        if not _same(getattr(existing, key), value):  # each change redraws the layer
            setattr(existing, key, value)
    existing.metadata.update(metadata)
    existing.data = data
    return existing


def _same(a, b) -> bool:
    a, b = getattr(a, "affine_matrix", a), getattr(b, "affine_matrix", b)
    try:
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))
    except (TypeError, ValueError):
        return a == b


def matching_reference(viewer, image: Image) -> Labels | None:
    """The ground-truth Labels layer that belongs to ``image``, if one is open.

    Our reader names it ``"<image> masks"`` and gives both the same ``sample_id``.
    """
    sample = image.metadata.get(meta.SAMPLE_ID)
    for layer in viewer.layers:
        if not isinstance(layer, Labels) or layer.metadata.get(meta.OUTPUT):
            continue
        if layer.name == f"{image.name} masks" or (
            sample is not None and layer.metadata.get(meta.SAMPLE_ID) == sample
        ):
            return layer
    return None


def score_planes(reference: Labels, planes: Sequence[Index], labels: np.ndarray) -> DatasetScore:
    """DSB2018 score of the result planes against the same planes of ``reference``.

    Raises
    ------
    ValueError
        The reference does not have the result's shape.
    """
    ref = reference.data
    need = len(planes[0]) + 2 if planes else 2
    if ref.ndim != need or tuple(ref.shape[-2:]) != tuple(labels.shape[-2:]):
        raise ValueError(
            f"reference is {'x'.join(map(str, ref.shape))}, "
            f"result planes are {'x'.join(map(str, labels.shape[-2:]))}"
        )
    pairs = ((str(index), np.asarray(ref[index]), plane) for index, plane in zip(planes, labels))
    return score_dataset(pairs)
