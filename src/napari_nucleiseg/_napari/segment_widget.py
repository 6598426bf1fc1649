"""The "Segment nuclei" dock widget: one click from an image layer to a Labels layer.

The network runs in a ``thread_worker`` over :func:`napari_nucleiseg.pipeline.segment`;
the maps it returns are kept, so that moving a threshold re-runs only the
post-processing. Layers are touched only on the GUI thread.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import replace
from operator import attrgetter
from pathlib import Path

import napari
import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSlider,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
)
from napari.layers import Image, Labels
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_warning
from napari.utils.theme import get_theme
from superqt.utils import FunctionWorker, GeneratorWorker

from ..errors import FileProblem, one_line
from ..models import ModelConfig
from ..models.choice import AUTO
from ..pipeline import Progress, plane_indices
from ..postprocess import PostprocessConfig
from ..preprocess import CHANNEL_NAMES, NormalizeConfig
from ..scale import Microns, in_pixels
from . import _layers
from . import _metadata as meta
from ._lifetime import CloseWatcher, Lifetime, while_alive
from ._models import available_devices, device_line
from ._segment_jobs import LargeResult, Request, Result, relabel, segment, segment_large_image
from .folder_panel import FolderPanel
from .model_picker import ModelPicker
from .results_panel import Measurement, Measuring, ResultsPanel, measured, pixel_size_um

ALL_PLANES, PLANE_ON_SCREEN = "All planes", "Plane on screen"
#: side of the central crop of an image that the model list's "auto" judges its kind by
LOOK_SIDE = 2048
TILES = (("Auto", None), ("256", 256), ("512", 512), ("1024", 1024), ("2048", 2048))
#: the Polarity choices and the normalisation's ``invert`` each stands for
POLARITIES = (("Auto", "auto"), ("Bright nuclei", "never"), ("Dark nuclei", "always"))
MICRONS = "µm"
DIAMETER_UNITS = ("px", MICRONS)


class SegmentWidget(Container):
    """Segment the nuclei of an image layer into a Labels layer ``"<image> nuclei"``.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    """

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=False)
        self._viewer = viewer
        self._model_post = PostprocessConfig()
        self._model_norm = NormalizeConfig()
        self._result: Result | None = None
        self._request: Request | None = None
        self._pending_folder: Path | None = None  # a large run's labels, until shown
        self._judged: Image | None = None  # the image "auto" last judged
        self._large_folders: dict[str, Path] = {}  # the labels on disk of large layers shown
        self._worker = self._relabel_worker = None
        self._relabel_again = False
        self._quiet = False
        self._score_job = None
        self._life = Lifetime()
        self._build()
        self._connect()
        self.reset_choices()
        self._follow_active()
        self._model.update()  # the card and the knobs, then one look at the image ("auto")
        self._on_image()
        self._on_device()

    # ---- layout -------------------------------------------------------------------------
    def _build(self) -> None:
        self._image = ComboBox(label="Image", choices=self._image_choices)
        self._planes = ComboBox(label="Planes", choices=[ALL_PLANES, PLANE_ON_SCREEN])
        self._channel = ComboBox(label="Channel", choices=self._channel_choices)
        self._polarity = ComboBox(label="Polarity", choices=POLARITIES)
        self._diameter = FloatSpinBox(label="", min=0.0, max=1000.0, step=1.0)
        self._diameter.native.setSpecialValueText("Auto")  # 0: estimated per image
        self._diameter_unit = ComboBox(label="", choices=DIAMETER_UNITS)
        diameter = Container(
            widgets=[self._diameter, self._diameter_unit], layout="horizontal",
            labels=False, label="Diameter",
        )  # fmt: skip
        diameter.margins = (0, 0, 0, 0)
        self._model = ModelPicker(
            self._viewer, "Model", "Load a napari-nucleiseg checkpoint",
            on_change=self._on_model, choose_trained=True, image=self._look,
            on_look=self._update_run_button,
        )  # fmt: skip
        self._device = ComboBox(label="Device", choices=available_devices())
        self._device_line = Label(label="")
        self._prob = FloatSlider(label="Prob. threshold", min=0.05, max=0.95, step=0.01)
        self._seed = FloatSlider(label="Seed threshold", min=0.05, max=0.99, step=0.01)
        self._min_size = SpinBox(label="Min. size (px)", min=0, max=100_000)
        self._split = FloatSpinBox(label="Shape split (px)", min=0.0, max=20.0, step=0.5)
        self._min_prob = FloatSlider(label="Min. mean prob.", min=0.0, max=0.99, step=0.01)
        #: the Thresholds section, each knob by its PostprocessConfig field
        self._knobs = {
            "prob_threshold": self._prob, "seed_threshold": self._seed,
            "min_size": self._min_size, "min_mean_prob": self._min_prob,
            "split_depth": self._split,
        }  # fmt: skip
        self._tta = CheckBox(text="Test-time flips (2.5x slower)", label="")
        self._tile = ComboBox(label="Tile size", choices=TILES)
        self._show_maps = CheckBox(text="Add probability maps", label="")
        self._run = PushButton(text="Segment nuclei", label="")
        self._progress = ProgressBar(min=0, max=1000, label="", visible=False)
        self._cancel = PushButton(text="Cancel", label="", visible=False)
        self._status = Label(label="")
        self._reference = ComboBox(label="Reference", choices=self._reference_choices)
        self._score = Label(label="")
        _layers.narrow(self._image, self._reference)
        self.folder_panel = FolderPanel(self._viewer, self._batch_settings)
        self.results = ResultsPanel(self._viewer)
        thresholds = _layers.section("Thresholds", list(self._knobs.values()))
        options = _layers.section(
            "Device and options",
            [self._device, self._device_line, self._tta, self._tile, self._show_maps],
            expanded=False,
        )
        self.extend([
            _layers.rows(
                self._image, self._planes, self._channel, self._polarity, diameter,
                self._model.combo, self._model.card,
            ),
            self._run,
            self._progress, self._cancel, self._status, thresholds, options,
            _layers.rows(self._reference), self._score, self.results, self.folder_panel,
        ])  # fmt: skip
        _layers.text_lines(self._device_line, self._status, self._score)
        self._device_line.native.setStyleSheet("color: gray;")
        colour = get_theme(self._viewer.theme).current.as_hex()
        self._run.native.setStyleSheet(
            f"QPushButton {{ font-weight: bold; padding: 7px; background-color: {colour}; "
            "color: white; } QPushButton:disabled { background-color: gray; }"
        )
        self._run.tooltip = "Run the model on the image (the result replaces '<image> nuclei')"
        self._prob.tooltip = "Body probability above which a pixel belongs to a nucleus"
        self._seed.tooltip = "Body x (1 - border) above which a pixel seeds a nucleus of its own"
        self._min_size.tooltip = "Nuclei with fewer pixels are dropped"
        self._min_prob.tooltip = (
            "Nuclei whose mean body probability is lower are dropped (texture and debris "
            "the network is unsure of, whatever their size); at or below the probability "
            "threshold it drops none"
        )
        self._split.tooltip = (
            "Cut touching nuclei at the neck between them: how deep (px) the neck must be; "
            "lower cuts more, 0 is off"
        )
        self._tile.tooltip = (
            "Tile side for large images (Auto: whole image up to 1536x1536); a U-Net's tiles "
            "of 208 px or more give the maps of the whole image exactly"
        )
        self._channel.tooltip = (
            "The channel the network sees alone, as a grey image (the nuclear stain of a "
            "fluorescence composite); Auto: all of them, as the model takes them"
        )
        self._polarity.tooltip = (
            "Bright nuclei on a dark background (fluorescence) or dark nuclei on a bright one "
            "(brightfield, H&E); Auto: decided per image"
        )
        self._diameter.tooltip = (
            "The nuclei's diameter: the image is resized so that the network sees them at the "
            "size it was trained on, and the labels come back at the image's size; Auto: "
            "estimated per image"
        )
        self._diameter_unit.tooltip = (
            "Pixels, or µm: turned into pixels by the image layer's scale in µm (or its "
            "file's pixel size); in a folder run, by each file's (or the Pixel size given)"
        )
        self._reference.tooltip = "Ground-truth Labels layer to score the result against"
        _layers.scroll(self)

    def _connect(self) -> None:
        self._image.changed.connect(self._on_image)
        self._device.changed.connect(self._on_device)
        for knob in self._knobs.values():
            knob.changed.connect(self._on_knob)
        self._show_maps.changed.connect(self._on_show_maps)
        self._run.changed.connect(self.run)
        self._cancel.changed.connect(self.cancel)
        self._reference.changed.connect(self._update_score)
        layers = self._viewer.layers
        self._viewer_events = [
            (layers.events.inserted, self._on_inserted),
            (layers.events.removed, self._on_removed),
            (layers.events.moved, self.reset_choices),
            (layers.selection.events.active, self._follow_active),
        ]
        for emitter, callback in self._viewer_events:
            emitter.connect(callback)
        self._watcher = CloseWatcher(self._disconnect)
        self.native.destroyed.connect(self._life.end)
        self.native.installEventFilter(self._watcher)

    def _disconnect(self) -> None:
        """Drop the viewer callbacks and stop the work (the widget is closing)."""
        for emitter, callback in self._viewer_events:
            emitter.disconnect(callback)
        self._viewer_events = []
        self._model.disconnect()
        self.results.close()
        self.cancel()

    # ---- choices ------------------------------------------------------------------------
    def _image_choices(self, _widget=None) -> list[tuple[str, Image]]:
        return [
            (layer.name, layer)
            for layer in self._viewer.layers
            if isinstance(layer, Image) and not layer.metadata.get(meta.OUTPUT)
        ]

    def _channel_choices(self, _widget=None) -> list[tuple[str, int | None]]:
        """Auto, and each colour of an RGB(A) layer; a grey layer has only its one channel."""
        image = self._image.value
        colours = [(name.capitalize(), i) for name, i in CHANNEL_NAMES.items()]
        return [("Auto", None), *(colours if image is not None and image.rgb else [])]

    def _reference_choices(self, _widget=None) -> list[tuple[str, Labels | None]]:
        labels = [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, Labels)]
        return [("none", None), *labels]

    def _on_inserted(self, event=None) -> None:
        self.reset_choices()
        image = self._image.value
        if image is not None and self._reference.value is None:  # e.g. a sample's masks
            self._reference.value = _layers.matching_reference(self._viewer, image)

    def _on_removed(self, event=None) -> None:
        self.reset_choices()
        if self._result is not None and self._result.image not in self._viewer.layers:
            self._result = None

    def _follow_active(self, event=None) -> None:
        """Take the image selected in the layer list as input."""
        active = self._viewer.layers.selection.active
        if isinstance(active, Image) and not active.metadata.get(meta.OUTPUT):
            self._image.value = active

    # ---- settings -----------------------------------------------------------------------
    def _on_image(self, _value=None) -> None:
        image = self._image.value
        self._planes.visible = image is not None and bool(_layers.image_lead(image))
        self._channel.reset_choices()
        self._channel.visible = image is not None and image.rgb
        if image is not None:
            self._reference.value = _layers.matching_reference(self._viewer, image)
        if self._worker is None and self._result is not None and self._result.image != image:
            self._result = None  # its maps and its count belong to the other image
            # (!= not `is not`: napari hands docks a viewer proxy whose layers are proxies too)
            self._status.value = self._status.tooltip = ""
            self._update_score()
        if self._worker is None:
            self._judged = image
            self._model.refresh()  # with "auto", the model for this image's kind
        self._update_run_button()

    def _look(self) -> Callable[[], np.ndarray] | None:
        """A function that reads the chosen image's first plane, or its central 2048x2048
        when larger: what the model list's "auto" judges the image's kind by. Only the crop
        is read, and in the picker's worker (a lazy layer reads it from disk)."""
        layer = self._image.value
        if layer is None:
            return None
        data, lead = _layers.image_data(layer), len(_layers.image_lead(layer))
        y, x = (max((n - LOOK_SIDE) // 2, 0) for n in data.shape[lead : lead + 2])
        crop = (0,) * lead + (slice(y, y + LOOK_SIDE), slice(x, x + LOOK_SIDE))
        return lambda: np.asarray(data[crop])

    def load_checkpoint(self, path: str | Path) -> bool:
        """Offer a checkpoint file as model and choose it; a bad file gives a notification.
        Returns whether the file was accepted."""
        return self._model.load_checkpoint(path)

    def _on_model(self, config: ModelConfig | None) -> None:
        """A new model (None: none usable): its thresholds become the knobs' defaults."""
        self._result = None  # the kept maps belong to the previous model
        self._model_post = PostprocessConfig() if config is None else config.postprocess
        self._model_norm = NormalizeConfig() if config is None else config.normalization
        if config is not None:
            self._quiet = True
            try:
                for name, knob in self._knobs.items():  # within the knob's range
                    knob.value = min(max(getattr(config.postprocess, name), knob.min), knob.max)
            finally:
                self._quiet = False
        self._update_run_button()

    def _on_device(self, _value=None) -> None:
        self._device_line.value = device_line(self._device.value)

    def _post(self) -> PostprocessConfig:
        """The model's post-processing with the knobs' thresholds."""
        values = {
            n: k.value if isinstance(k, SpinBox) else float(k.value) for n, k in self._knobs.items()
        }
        return replace(self._model_post, **values)

    def _choices(self) -> dict:
        """The dock's polarity and channel, over a model's normalisation."""
        return {"invert": self._polarity.value, "channel": self._channel.value}

    def _normalization(self) -> NormalizeConfig:
        """The model's normalisation with the dock's polarity and channel."""
        return self._model_norm.chosen(self._choices())

    def _batch_settings(self) -> dict:
        """What a folder run takes from the dock: the same model and settings as an image;
        with "auto", each image's model, and its own thresholds unless the knobs moved."""
        auto = self._model.combo.value == AUTO and self._model.chosen is not None
        post = self._post()
        return {
            "model": AUTO if auto else self._model.chosen, "device": self._device.value,
            "post": None if auto and post == self._model_post else post,
            "tile_size": self._tile.value, "tta": self._tta.value,
            "choices": self._choices(),
            "diameter": self._diameter_choice(),
        }  # fmt: skip

    def _diameter_choice(self) -> float | str | Microns:
        """The Diameter box: a number of pixels or µm, or "auto" (0)."""
        value = float(self._diameter.value)
        if not value:
            return "auto"
        return Microns(value) if self._diameter_unit.value == MICRONS else value

    def _can_run(self) -> bool:
        """An image and a model, no run under way, and "auto" done judging the image."""
        busy = self._worker is not None or self._model.looking
        return self._image.value is not None and self._model.chosen is not None and not busy

    def _update_run_button(self) -> None:
        self._run.enabled = self._can_run()

    # ---- the run ------------------------------------------------------------------------
    def run(self, _value=None) -> None:
        """Segment the chosen image (the Segment button)."""
        image = self._image.value
        if not self._can_run():
            return
        diameter = self._diameter_choice()
        if isinstance(diameter, Microns):  # in the image's pixels, from its scale (or file)
            try:
                diameter = in_pixels(diameter, pixel_size_um(image), image.name)
            except FileProblem as exc:
                self._on_failed(exc)
                return
        lead = _layers.image_lead(image)
        one = bool(lead) and self._planes.value == PLANE_ON_SCREEN
        planes = [_layers.plane_on_screen(self._viewer, image)] if one else plane_indices(lead)
        self._request = req = Request(
            image=image, data=_layers.image_data(image), planes=planes,
            model=self._model.chosen, device=self._device.value, tile_size=self._tile.value,
            tta=self._tta.value, post=self._post(), normalization=self._normalization(),
            diameter=diameter,
        )  # fmt: skip
        if _layers.is_large(image):
            self._run_large(req)
            return
        self._start(  # the labels are measured in the same thread
            self._on_result, measured, segment(req), Measuring.of(image), attrgetter("labels")
        )

    def _start(self, on_result, *work) -> None:
        """Run ``work`` (a function and its arguments) in a worker, with progress and Cancel."""
        self._life.stops = [self._request.stop]
        self._worker = create_worker(
            *work, _start_thread=False, _worker_class=GeneratorWorker,
            _connect={"yielded": self._on_step, "returned": on_result,
                      "errored": self._on_failed, "finished": self._on_finished,
                      "warned": self._on_warned},
        )  # fmt: skip
        self._progress.value = 0
        self._progress.visible = self._cancel.visible = True
        self._cancel.enabled = True
        _layers.show_line(self._status, f"Segmenting {self._request.image.name}…")
        self._update_run_button()
        self._worker.start()

    def _run_large(self, req: Request) -> None:
        """A layer whose planes are over ``large.LARGE_PIXELS`` (a whole slide, a big Zarr):
        segmented in bounded memory, its labels in Zarr on disk shown as a multiscale Labels
        layer read a tile at a time. The folder (in the system's temporary folder, TMPDIR)
        goes when a run replaces the layer, when its run fails or is cancelled, and when
        napari exits."""
        if _layers.image_lead(req.image):
            _layers.show_line(
                self._status, "Stacks of planes this large are not segmented yet: open one plane."
            )
            return
        folder = self._pending_folder = Path(tempfile.mkdtemp(prefix="nucleiseg-labels-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        self._start(self._on_large_result, segment_large_image, req, folder)

    @while_alive
    def _on_large_result(self, out: LargeResult | None) -> None:
        if out is None or self._request.stop.is_set():
            return
        self._result = None  # no maps kept: the thresholds apply at the next run
        name = f"{out.image.name} nuclei"
        if name in self._viewer.layers:
            self._viewer.layers.remove(name)
        replaced = self._large_folders.pop(name, None)
        if replaced is not None:  # the labels of the layer just removed
            shutil.rmtree(replaced, ignore_errors=True)
        self._large_folders[name], self._pending_folder = self._pending_folder, None
        metadata = {
            meta.OUTPUT: True,
            **meta.segmentation(out.image, out.model, self._request.post),
        }
        self._viewer.add_labels(
            _layers.label_pyramid(out.labels), multiscale=True, name=name, metadata=metadata,
            **_layers.geometry(out.image),
        )  # fmt: skip
        noun = "nucleus" if out.nuclei == 1 else "nuclei"
        self._status.value = (
            f"<big><b>{out.nuclei}</b> {noun} found</big>{self._by(out.model)}<br>A large "
            "image: its labels are on disk, read as shown; thresholds apply at the next run; "
            "not measured."
        )
        self._status.tooltip = f"In '{name}', by {out.model}"

    def cancel(self, _value=None) -> None:
        """Stop the run within one network layer; the layers stay as they were."""
        if self._worker is None:
            return
        self._request.stop.set()
        # no worker.quit(): a generator left at a yield would keep its stop hooks on the
        # model (shared with the next run) until garbage collection; the stop event ends it
        # with Cancelled, running its clean-up
        self._cancel.enabled = False
        self._status.value = "Cancelling…"

    @while_alive
    def _on_step(self, step: Progress) -> None:
        self._progress.value = int(1000 * step.fraction)
        if not self._request.stop.is_set():
            _layers.show_line(self._status, f"Segmenting {self._request.image.name}: {step.text}")

    @while_alive
    def _on_failed(self, exc: Exception) -> None:
        _layers.show_line(self._status, str(exc))
        show_error(str(exc))

    @while_alive
    def _on_warned(self, args: tuple) -> None:
        show_warning(str(args[0]))  # e.g. the GPU ran out of memory and the run moved on

    @while_alive
    def _on_finished(self) -> None:
        cancelled = self._request is not None and self._request.stop.is_set()
        self._worker = None
        if self._image.value != self._judged:  # the image changed while it ran
            self._judged = self._image.value
            self._model.refresh()
        if self._pending_folder is not None:  # a large run that failed or was cancelled
            shutil.rmtree(self._pending_folder, ignore_errors=True)
            self._pending_folder = None
        self._progress.visible = self._cancel.visible = False
        if cancelled:
            self._status.value = "Cancelled; no layer was changed."
        self._update_run_button()

    @while_alive
    def _on_result(self, out: tuple[Result, Measurement] | None) -> None:
        if out is None or self._request.stop.is_set():
            return
        result, measurement = out
        self._result = result
        if self._show_maps.value:
            self._show_probability_maps()
        self._show_labels(result.labels, self._request.post, measurement)
        if self._post() != self._request.post:  # a knob moved during the run
            self._on_knob()

    # ---- results ------------------------------------------------------------------------
    def _show_labels(
        self, labels: np.ndarray, post: PostprocessConfig, measurement: Measurement
    ) -> None:
        res = self._result
        res.labels = labels
        if res.layer is not None:
            res.layer.events.paint.disconnect(self._on_paint)
        made = meta.segmentation(res.image, res.model, post)
        res.layer = _layers.put_layer(
            self._viewer, Labels, f"{res.image.name} nuclei", res.image, res.planes, labels,
            metadata=made,
        )  # fmt: skip
        res.layer.events.paint.connect(self._on_paint)
        res.edited = False
        self.results.show(res.layer, res.image, measurement)
        count = sum(int(plane.max(initial=0)) for plane in labels)
        noun = "nucleus" if count == 1 else "nuclei"
        where = "" if res.planes == [()] else f" in {len(res.planes)} planes"
        self._status.value = f"<big><b>{count}</b> {noun} found{where}</big>{self._by(res.model)}"
        self._status.tooltip = f"In '{res.layer.name}', by {res.model}"
        self._update_score()

    def _by(self, model: str) -> str:
        """After the count: which model "auto" ran (a model chosen by name goes without)."""
        return f" by {model} (auto)" if self._model.value == AUTO else ""

    def _show_probability_maps(self, _value=None) -> None:
        res = self._result
        for i, name in enumerate(res.config.maps):
            _layers.put_layer(
                self._viewer, Image, f"{res.image.name} {name} probability", res.image,
                res.planes, res.maps[:, i], colormap="magma", blending="additive",
                contrast_limits=(0, 1), visible=i == 0,
            )  # fmt: skip

    def _on_show_maps(self, value: bool) -> None:
        if value and self._result is not None:
            self._show_probability_maps()

    def _on_paint(self, event=None) -> None:
        if self._result is not None:
            self._result.edited = True

    def _on_knob(self, _value=None) -> None:
        """Re-run post-processing on the kept maps (never the network)."""
        res = self._result
        if self._quiet or res is None or self._worker is not None:
            return
        if res.edited:
            self._status.value = (
                "The labels were edited by hand: press 'Segment nuclei' to redo them."
            )
            return
        if self._relabel_worker is not None:
            self._relabel_again = True
            return
        self._relabel_again = False
        post = self._post()
        self._relabel_worker = create_worker(
            measured, relabel(res.maps, res.config, post), Measuring.of(res.image),
            _start_thread=False, _worker_class=GeneratorWorker,
            _connect={"returned": self._on_relabelled(res, post),
                      "finished": self._on_relabel_done, "errored": self._on_failed},
        )  # fmt: skip
        self._relabel_worker.start()

    def _on_relabelled(self, res: Result, post: PostprocessConfig):
        def show(out: tuple[np.ndarray, Measurement]) -> None:
            if self._life.alive and self._result is res and not res.edited:
                labels, measurement = out
                self._show_labels(labels, post, measurement)

        return show

    @while_alive
    def _on_relabel_done(self) -> None:
        self._relabel_worker = None
        if self._relabel_again:
            self._on_knob()

    def _update_score(self, _value=None) -> None:
        """Score the result against the reference, in a worker (seconds on a large stack)."""
        ref, res = self._reference.value, self._result
        show = ref is not None and res is not None
        self._score.visible = show  # (reading .visible back is False while the viewer is hidden)
        self._score_job = job = object()  # only the latest request is shown
        if not show:
            return
        _layers.show_line(self._score, f"Scoring against '{ref.name}'…")
        self._score.tooltip = f"Against '{ref.name}'; AP = TP / (TP + FP + FN) at each IoU"

        def done(score) -> None:
            if not self._life.alive or self._score_job is not job:
                return
            ap = dict(zip(score.thresholds, score.ap))
            over = f" (mean of {len(res.planes)} planes)" if len(res.planes) > 1 else ""
            aps = " · ".join(f"@{t:g} <b>{ap[t]:.3f}</b>" for t in (0.5, 0.75, 0.9))
            self._score.value = f"DSB2018 score <b>{score.score:.3f}</b>{over}<br>AP{aps}"

        def failed(exc: Exception) -> None:
            if self._life.alive and self._score_job is job:
                _layers.show_line(
                    self._score, f"Cannot score against '{ref.name}': {one_line(exc)}"
                )

        create_worker(
            _layers.score_planes, ref, res.planes, res.labels, _worker_class=FunctionWorker,
            _connect={"returned": done, "errored": failed},
        )  # fmt: skip
