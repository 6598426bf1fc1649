"""Models for the widgets: a cache keyed by (checkpoint, device), model cards and devices on
offer (the model list itself is :mod:`.model_picker`)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import torch

from ..devices import resolve_device
from ..models import (
    ModelConfig,
    load_model,
    read_checkpoint,
    resolve_checkpoint,
)

#: device choices (label, value) in the order offered
_DEVICES = (("Auto", "auto"), ("CUDA", "cuda"), ("MPS", "mps"), ("CPU", "cpu"))


def _key(source: str | os.PathLike) -> tuple[str, float]:
    """(resolved file, modification time): a retrained file at the same path is reloaded."""
    path = resolve_checkpoint(source)
    return str(path.resolve()), path.stat().st_mtime


@lru_cache(maxsize=8)
def _config(path: str, mtime: float) -> ModelConfig:
    return read_checkpoint(path)[0]


@lru_cache(maxsize=3)
def _model(path: str, mtime: float, device: str):
    return load_model(path, device=device)


def model_config(source: str | os.PathLike) -> ModelConfig:
    """The config of a shipped model name or checkpoint file (cached).

    Raises
    ------
    FileProblem
        Not a readable napari-nucleiseg checkpoint; the message names the file.
    """
    return _config(*_key(source))


def get_model(source: str | os.PathLike, device: str = "auto"):
    """``(model, config)`` of a shipped name or checkpoint file on ``device`` (cached).

    Raises
    ------
    FileProblem
        Not a readable checkpoint, or weights that do not fit their config.
    ValueError
        A device this machine does not have.
    """
    return _model(*_key(source), str(resolve_device(device)))


def available_devices() -> list[tuple[str, str]]:
    """(label, value) of the devices this machine's PyTorch can use, "Auto" first."""
    out = []
    for label, value in _DEVICES:
        try:
            resolve_device(value)
        except ValueError:
            continue
        out.append((label, value))
    return out


def device_line(device: str) -> str:
    """One line saying which device ``device`` ("auto", "cuda", ...) runs on."""
    dev = resolve_device(device)
    if dev.type == "cuda":
        return f"Runs on the GPU: {torch.cuda.get_device_name(dev)}"
    if dev.type == "mps":
        return "Runs on the Apple GPU (MPS)"
    return f"Runs on the CPU ({torch.get_num_threads()} threads)"


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def model_card(source: str | os.PathLike, config: ModelConfig) -> tuple[str, str]:
    """A one-line summary of a model and a longer tooltip: training data, epochs, scores.

    Returns
    -------
    line, tooltip : str
    """
    t = config.training
    arch = f"{config.architecture} ({config.normalization.channels} input)"
    stages = [run.get("epochs") or 0 for run in t.runs()]
    if not t.epochs and not t.data_roots:
        line = f"{arch}; no training record in this checkpoint"
    else:
        data = ", ".join(Path(r).name for r in t.data_roots) or "unknown data"
        trained = f"{sum(stages)} epochs" + (f" in {len(stages)} stages" if len(stages) > 1 else "")
        line = f"{arch}, {trained} on {data}"
        if "val_dsb" in t.scores:
            line += f"; validation DSB score {_fmt(t.scores['val_dsb'])}"
    pp = config.postprocess
    tips = [
        f"File: {resolve_checkpoint(source)}",
        f"Architecture: {config.architecture} {config.arch_kwargs or ''}".rstrip(),
        f"Maps: {', '.join(config.maps)}",
        f"Trained on: {', '.join(t.data_roots) or 'not recorded'}",
        f"Epochs: {' + '.join(map(str, stages))}; excluded ids: "
        f"{len(t.exclude_ids)}; validation ids: {len(t.val_ids)}",
        f"Machine: {t.machine or 'not recorded'}",
        f"Default thresholds: probability {pp.prob_threshold}, seed {pp.seed_threshold}, "
        f"min. size {pp.min_size}, min. mean probability {pp.min_mean_prob or 'off'}, "
        "shape split "
        f"{f'{pp.split_depth} px' if pp.split_depth else 'off'}",
    ]
    tips += [f"{k}: {_fmt(v)}" for k, v in t.scores.items() if not isinstance(v, list | dict)]
    for key in ("stardist_test_ap",):
        if isinstance(t.scores.get(key), dict):
            aps = ", ".join(f"{k} {_fmt(v)}" for k, v in t.scores[key].items())
            tips.append(f"AP on the StarDist test split: {aps}")
    return line, "\n".join(tips)
