"""Checkpoints: weights and the config that rebuilds the model and its preprocessing, in one file.

A checkpoint is ``torch.save({"format": "napari-nucleiseg", "version": 1,
"config": <JSON text>, "state_dict": {name: tensor}})``: plain data only, so it
loads with ``torch.load(weights_only=True)`` and no pickled code ever runs.
The config says which architecture and arguments to build, how to normalise
images, which maps the outputs are, the default post-processing thresholds,
and how the weights were trained.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..errors import FileProblem
from ..io.atomic import replacing
from ..postprocess import MAPS, PostprocessConfig
from ..preprocess import RUN_CHOICES, NormalizeConfig
from .registry import SegmentationModel, create_model

FORMAT = "napari-nucleiseg"
VERSION = 1
#: folder of the shipped checkpoints, ``<name>.pt`` each
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
#: the shipped model that ``predict`` and the widgets use unless told otherwise (the better one)
DEFAULT_MODEL = "dsb2018-unet"


@dataclass
class TrainingInfo:
    """How a checkpoint's weights were made (for its model card and for users).

    Attributes
    ----------
    data_roots : list of str
        Stage-1 roots trained on.
    exclude_ids, val_ids : list of str
        Ids never trained on; ids validated on.
    epochs : int
        Epochs run.
    scores : dict
        Validation results, e.g. ``{"val_dsb": 0.61, "best_epoch": 12}``.
    machine : str
        Where it trained (device, CPU/GPU name).
    settings : dict
        Optimiser, learning rate, batch size, crop size, seed, augmentation, ...
    base : dict
        For fine-tuned weights, the record of the weights they started from
        (see :meth:`lineage`); empty for a model trained from scratch.
    """

    data_roots: list[str] = field(default_factory=list)
    exclude_ids: list[str] = field(default_factory=list)
    val_ids: list[str] = field(default_factory=list)
    epochs: int = 0
    scores: dict[str, Any] = field(default_factory=dict)
    machine: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    base: dict[str, Any] = field(default_factory=dict)

    def lineage(self, source: str | os.PathLike) -> dict[str, Any]:
        """This record as the ``base`` of weights fine-tuned from ``source`` (name or path);
        a base's own ``base`` stays nested in it, so the whole history travels."""
        return {"source": str(source), **asdict(self)}

    def runs(self) -> list[dict[str, Any]]:
        """The records of every training run behind these weights, first to last (each
        fine-tune nests the record of the weights it started from in ``base``)."""
        runs = [asdict(self)]
        while runs[0].get("base"):
            runs.insert(0, runs[0]["base"])
        return runs


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model and use it, saved beside its weights.

    Attributes
    ----------
    architecture : str
        A registered model name ("unet", "linknet").
    arch_kwargs : dict
        The architecture's arguments other than ``in_channels``/``out_channels``.
    maps : tuple of str
        The output maps in order; the first two are "body" and "border".
    normalization : NormalizeConfig
        How images are normalised (also fixes ``in_channels``).
    postprocess : PostprocessConfig
        Default thresholds for turning maps into labels.
    training : TrainingInfo
        How the weights were trained.
    diameter : float, optional
        The nucleus diameter (px) the network was trained to see: training resized
        every sample so that its median nucleus was this wide, and inference resizes
        images likewise (:mod:`napari_nucleiseg.scale`). None: trained on images
        as they came (see :attr:`nucleus_diameter`).
    """

    architecture: str = "unet"
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    maps: tuple[str, ...] = ("body", "border")
    normalization: NormalizeConfig = field(default_factory=NormalizeConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    training: TrainingInfo = field(default_factory=TrainingInfo)
    diameter: float | None = None

    def __post_init__(self) -> None:
        self.maps = tuple(self.maps)
        if self.diameter is not None and not (math.isfinite(self.diameter) and self.diameter > 0):
            raise ValueError(f"diameter must be a positive number of pixels, got {self.diameter}")
        if self.maps[:2] != ("body", "border") or any(m not in MAPS for m in self.maps):
            raise ValueError(
                f"maps must be 'body', 'border' and optionally 'contour', got {self.maps}"
            )
        clash = {"in_channels", "out_channels"} & set(self.arch_kwargs)
        if clash:
            raise ValueError(
                f"arch_kwargs must not set {', '.join(sorted(clash))}: they follow "
                "normalization.channels and maps"
            )

    @property
    def nucleus_diameter(self) -> float:
        """The diameter (px) the network sees nuclei best at: :attr:`diameter`, or for a
        model trained on images as they came, the median of DSB2018 stage 1."""
        from ..scale import REFERENCE_DIAMETER

        return REFERENCE_DIAMETER if self.diameter is None else float(self.diameter)

    @property
    def in_channels(self) -> int:
        """Input channels, fixed by the normalisation (1 grey, 3 rgb)."""
        return self.normalization.in_channels

    @property
    def out_channels(self) -> int:
        """Output channels: one per map."""
        return len(self.maps)

    def build(self) -> SegmentationModel:
        """A model of this config's architecture with random weights."""
        return create_model(
            self.architecture,
            in_channels=self.in_channels,
            out_channels=self.out_channels,
            **self.arch_kwargs,
        )

    def chosen(self, choices: Mapping[str, Any] | None) -> ModelConfig:
        """This config with a run's choices over its own: polarity and channel
        (:data:`~napari_nucleiseg.preprocess.RUN_CHOICES`) over its normalisation, and
        thresholds (:data:`~napari_nucleiseg.postprocess.THRESHOLDS`) over its post-processing.

        Raises
        ------
        ValueError
            A choice that is neither.
        """
        if not choices:
            return self
        norm = {k: v for k, v in choices.items() if k in RUN_CHOICES}
        post = {k: v for k, v in choices.items() if k not in RUN_CHOICES}
        return replace(
            self,
            normalization=self.normalization.chosen(norm),
            postprocess=self.postprocess.chosen(post),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        d = asdict(self)
        d["maps"] = list(self.maps)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error.

        Raises
        ------
        ValueError
            On unknown keys or invalid values.
        """
        d = dict(d)
        parts = {
            "normalization": NormalizeConfig,
            "postprocess": PostprocessConfig,
            "training": TrainingInfo,
        }
        for key, kind in parts.items():
            if key in d:
                d[key] = _dataclass_from(kind, d[key], key)
        return _dataclass_from(cls, d, "config")


class UnknownKeys(ValueError):
    """A config holds settings this version does not know (a later version added them)."""


def _dataclass_from(kind: type, d: Any, where: str) -> Any:
    if not isinstance(d, dict):
        raise ValueError(f"{where} must be a mapping, got {type(d).__name__}")
    known = {f.name for f in fields(kind)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise UnknownKeys(f"{where} has unknown keys: {', '.join(unknown)}")
    return kind(**d)


def save_checkpoint(
    path: str | os.PathLike, model: torch.nn.Module, config: ModelConfig, *, half: bool = False
) -> Path:
    """Write weights and config to ``path`` atomically (temp file, then rename).

    Parameters
    ----------
    path : path-like
        Destination (``.pt`` by convention); its folder must exist.
    model : SegmentationModel
        The model whose ``state_dict`` is saved (moved to CPU in the file).
    config : ModelConfig
        Its config; must build a model the weights fit.
    half : bool
        Store floating-point weights as float16 (half the file size); they are
        loaded back as float32.

    Returns
    -------
    Path
        ``path``. On failure the previous file at ``path``, if any, is untouched.
    """
    path = Path(path)
    state = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu()
        if half and tensor.is_floating_point():
            tensor = tensor.half()
        state[name] = tensor.contiguous()
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "written_by": __version__,  # read back when a later version's config is not understood
        "config": json.dumps(config.to_dict()),
        "state_dict": state,
    }
    with replacing(path) as tmp:
        torch.save(payload, tmp)
        os.chmod(tmp, 0o644)  # whatever the umask: a checkpoint is meant to be shared
    return path


def shipped_models() -> list[str]:
    """Names of the checkpoints shipped in the package (``weights/<name>.pt``)."""
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.pt")) if WEIGHTS_DIR.is_dir() else []


def resolve_checkpoint(path_or_name: str | os.PathLike) -> Path:
    """The checkpoint file of a path or a shipped model name.

    Raises
    ------
    FileProblem
        Neither an existing file nor a shipped name (the message lists the names).
    """
    path = Path(path_or_name)
    if path.is_file():
        return path
    shipped = WEIGHTS_DIR / f"{path_or_name}.pt"
    if isinstance(path_or_name, str) and os.sep not in path_or_name and shipped.is_file():
        return shipped
    names = ", ".join(shipped_models()) or "none yet"
    raise FileProblem(path, f"is neither a checkpoint file nor a shipped model name ({names})")


def read_checkpoint(path: str | os.PathLike) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Read a checkpoint's config and weights safely, without building the model.

    Raises
    ------
    FileProblem
        Missing file, not a torch file, a file holding code or objects other
        than plain data, or not a napari-nucleiseg checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileProblem(path, "does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types on a corrupt or unsafe file
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()  # no terminal colours
        if isinstance(exc, pickle.UnpicklingError) and "Unsupported global" in text:
            raise FileProblem(  # (torch's own text advises weights_only=False: not here)
                path,
                "holds pickled Python objects, not only weights and settings (torch.save of "
                "a whole model?); torch.load refused it so that no code in it can run",
            ) from None
        first = text.splitlines()[0] if text else type(exc).__name__
        if isinstance(exc, pickle.UnpicklingError):
            first = "not a torch file of weights"
        raise FileProblem(
            path, f"is not a readable napari-nucleiseg checkpoint (torch.load refused it: {first})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise FileProblem(path, f"is a torch file but not a {FORMAT} checkpoint (no 'format' key)")
    if payload.get("version") != VERSION:
        raise FileProblem(
            path,
            f"is checkpoint format version {payload.get('version')}; this version reads {VERSION}",
        )
    state = payload.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise FileProblem(path, "has no valid 'state_dict' of tensors")
    try:
        config = ModelConfig.from_dict(json.loads(payload["config"]))
    except UnknownKeys as exc:  # settings a later version added, e.g. a new threshold
        writer = payload.get("written_by")
        if isinstance(writer, str) and writer != __version__:
            by = f"napari-nucleiseg {writer}; this is {__version__}"
        else:
            by = "another build of napari-nucleiseg"
        raise FileProblem(
            path, f"has an invalid config: {exc} (written by {by}: a newer one may read it)"
        ) from None
    except (KeyError, TypeError, ValueError) as exc:
        raise FileProblem(path, f"has an invalid config: {exc}") from None
    return config, state


def _mismatch(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> str:
    """Why ``state`` does not fit ``model``, or '' when it does."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
        if items:
            more = f" and {len(items) - 3} more" if len(items) > 3 else ""
            problems.append(f"{len(items)} {label} ({', '.join(items[:3])}{more})")
    return "; ".join(problems)


def load_model(
    path_or_name: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[SegmentationModel, ModelConfig]:
    """Rebuild a model from a checkpoint file or shipped name, in eval mode on ``device``.

    Parameters
    ----------
    path_or_name : str or path-like
        A checkpoint file, or the name of a shipped model (see :func:`shipped_models`).
    device : str or torch.device
        "auto", "cpu", "cuda", "mps" (see :func:`napari_nucleiseg.inference.resolve_device`)
        or a torch device.

    Returns
    -------
    model : SegmentationModel
    config : ModelConfig

    Raises
    ------
    FileProblem
        The file cannot be read (see :func:`read_checkpoint`), its config names
        an unknown architecture, or its weights do not fit the architecture its
        config names.
    """
    from ..devices import resolve_device

    path = resolve_checkpoint(path_or_name)
    config, state = read_checkpoint(path)
    try:
        with torch.device("meta"):  # shapes only, no memory: a config may ask for any size
            skeleton = config.build()
    except (ValueError, TypeError) as exc:
        raise FileProblem(path, f"names a model that cannot be built: {exc}") from None
    problem = _mismatch(skeleton, state)
    if problem:
        raise FileProblem(
            path,
            f"weights do not fit the {config.architecture!r} model its config names: {problem}",
        )
    model = config.build()
    model.load_state_dict(state)
    return model.to(resolve_device(device)).eval(), config
