"""The forward pass as inference runs it: fast, built once per model, and stoppable.

A model as trained carries batch norm, which at inference is an affine map that can be
folded into the convolution before it (exact up to float rounding); the copy that runs
has it folded, sits on the device in the device's preferred memory layout, and is
cached per model, device and weights, so that a model still in training gets a fresh
copy after each step. The original model is never changed or moved.

Backends (:data:`BACKENDS`, chosen by the ``NUCLEISEG_BACKEND`` environment variable,
which ``--backend`` sets and Dask workers started here inherit); a GPU always runs
PyTorch. On the CPU, when ``onnxruntime`` and ``onnx`` are installed (dependencies, but
a platform may lack their wheels), "auto" runs the folded model through ONNX Runtime
quantised to 8 bits ("onnxruntime-int8"), with activation ranges from the shipped
samples, so that a model's maps are the same on every run: 1.7x faster than float at
1024x1024 end to end on a CPU with AVX-512 VNNI, DSB2018 scores at most 0.0015 below float
on six model/set pairs (docs/benchmarks.md); "onnxruntime" runs it in float (the same
labels as PyTorch, 1.2-1.4x faster from 520x696 up); without ONNX Runtime, "auto" is
"torch".

Stopping: inside :func:`stop_switch`, every layer of a runner checks the stop event of
its thread first and raises :class:`Cancelled` once it is set, so that a forward pass of
seconds stops in milliseconds (ONNX Runtime: its run is told to terminate).
"""

from __future__ import annotations

import copy
import io
import itertools
import os
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from .devices import memory_format

if TYPE_CHECKING:
    import numpy as np
    import torch


#: how the forward pass runs on the CPU; see the module's docstring
BACKENDS = ("auto", "torch", "onnxruntime", "onnxruntime-int8")
#: the environment variable that chooses the backend
BACKEND_VARIABLE = "NUCLEISEG_BACKEND"


class Cancelled(Exception):
    """Raised when the stop event is set (inside a forward pass, or between planes)."""


_local = threading.local()


@contextmanager
def stop_switch(stop: threading.Event | None) -> Iterator[None]:
    """Make the forward passes of this thread raise :class:`Cancelled` once ``stop`` is set
    (checked before every layer). Nested switches restore the outer one on exit."""
    outer = getattr(_local, "stop", None)
    _local.stop = stop
    try:
        yield
    finally:
        if getattr(_local, "stop", None) is stop:  # not a switch of an interleaved run's
            _local.stop = outer


def check_stop(stop: threading.Event | None = None) -> None:
    """Raise :class:`Cancelled` if ``stop`` (default: this thread's switch) is set."""
    stop = stop if stop is not None else getattr(_local, "stop", None)
    if stop is not None and stop.is_set():
        raise Cancelled


def _weights_key(model: torch.nn.Module) -> tuple:
    """What changes when a model's weights do: each tensor's storage and its in-place version
    (every optimiser step and ``load_state_dict`` bumps it; an edit through ``.data`` does
    not, nor can a tensor made under ``torch.inference_mode``, which has no version)."""
    return tuple(
        (t.data_ptr(), 0 if t.is_inference() else t._version)
        for t in itertools.chain(model.parameters(), model.buffers())
    )


def folded(model: torch.nn.Module) -> torch.nn.Module:
    """An eval-mode copy of ``model`` whose batch norms registered right after a convolution
    in the same container (our architectures' Conv-BN pairs, in their data flow) are folded
    into it (the same outputs up to float rounding, 16% less time for
    our U-Net at 1024x1024 on a CPU), every layer checking :func:`check_stop` first."""
    import torch
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    net = copy.deepcopy(model).eval()
    for module in list(net.modules()):
        names = list(module._modules)
        for a, b in zip(names, names[1:], strict=False):
            conv, norm = module._modules[a], module._modules[b]
            if isinstance(conv, torch.nn.Conv2d) and isinstance(norm, torch.nn.BatchNorm2d):
                module._modules[a] = fuse_conv_bn_eval(conv, norm)
                module._modules[b] = torch.nn.Identity()
    for module in net.modules():
        module._forward_pre_hooks.clear()  # the original's hooks are the original's
        module._forward_hooks.clear()
        module.register_forward_pre_hook(lambda m, a: check_stop())
    return net.requires_grad_(False)


@contextmanager
def exact() -> Iterator[None]:
    """Within, in this thread, "auto" on the CPU means float (ONNX Runtime) rather than int8:
    training's validation (:func:`~napari_nucleiseg.training.evaluate`), whose choice of
    checkpoint should not depend on the backend."""
    outer = getattr(_local, "exact", False)
    _local.exact = True
    try:
        yield
    finally:
        _local.exact = outer


def asked_backend() -> str:
    """The backend this process is asked for (``NUCLEISEG_BACKEND``; "auto" when unset)."""
    return os.environ.get(BACKEND_VARIABLE, "auto").strip().lower() or "auto"


def backend(device: torch.device) -> str:
    """The backend that runs on ``device``: one of :data:`BACKENDS` but "auto".

    Raises
    ------
    ValueError
        ``NUCLEISEG_BACKEND`` names no backend, or asks for ONNX Runtime where it is not
        installed.
    """
    asked = asked_backend()
    if asked not in BACKENDS:
        raise ValueError(f"{BACKEND_VARIABLE}={asked!r}: choose from {', '.join(BACKENDS)}")
    if asked == "torch" or device.type != "cpu":
        return "torch"
    try:
        import onnx  # noqa: F401  (torch's exporter needs it)
        import onnxruntime  # noqa: F401
    except ImportError:
        if asked != "auto":
            raise ValueError(
                "the onnxruntime backend needs the packages onnxruntime and onnx "
                "(pip install onnxruntime onnx), or choose the backend torch"
            ) from None
        return "torch"
    if asked == "auto":
        return "onnxruntime" if getattr(_local, "exact", False) else "onnxruntime-int8"
    return asked


def _calibration(net: torch.nn.Module) -> list[np.ndarray]:
    """Network inputs to set int8's ranges from: the two shipped samples (fluorescence and
    H&E), normalised as a model of ``net``'s input channels by default is, padded to its
    divisor. The same for every run of a model, so its int8 maps are too."""
    import numpy as np

    from .io import read_sample
    from .preprocess import NormalizeConfig, normalize
    from .samples import SAMPLES, sample_folder

    config = NormalizeConfig(channels="grey" if net.in_channels == 1 else "rgb")
    inputs = []
    for kind in SAMPLES:
        x = normalize(read_sample(sample_folder(kind)).image, config)
        pad = [(0, 0)] + [(0, -n % net.divisor) for n in x.shape[1:]]
        inputs.append(np.pad(x, pad, mode="reflect")[None])
    return inputs


@contextmanager
def _quiet_root_log() -> Iterator[None]:
    """ONNX Runtime's quantiser advises through the root logger; that advice is not the
    user's to act on."""
    import logging

    before = logging.root.manager.disable
    logging.disable(max(before, logging.WARNING))
    try:
        yield
    finally:
        logging.disable(before)


def _int8(model: bytes, net: torch.nn.Module) -> bytes:
    """``model`` quantised to int8 (weights per channel, activations by the ranges of
    :func:`_calibration`): about 2x faster on a CPU with VNNI; StarDist test split 0.6244
    against 0.6259 in float (docs/benchmarks.md)."""
    import tempfile

    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.inputs = iter({"x": x} for x in _calibration(net))

        def get_next(self):
            return next(self.inputs, None)

    with tempfile.TemporaryDirectory(prefix="nucleiseg-int8-") as folder, _quiet_root_log():
        source, target = Path(folder, "float.onnx"), Path(folder, "int8.onnx")
        source.write_bytes(model)
        quantize_static(
            source, target, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        )  # fmt: skip
        return target.read_bytes()


def _onnx_session(net: torch.nn.Module, int8: bool = False):
    """An ONNX Runtime session of ``net``'s network proper (no padding: every input side a
    multiple of its divisor), any batch and size, with this process's torch thread count."""
    import onnxruntime
    import torch

    class Network(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model._forward(x)

    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter: fast (0.3 s), and deprecated
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Network(net), torch.zeros(1, net.in_channels, net.divisor, net.divisor), buffer,
            dynamo=False, input_names=["x"], output_names=["y"], opset_version=17,
            dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}, "y": {0: "n", 2: "h", 3: "w"}},
        )  # fmt: skip
    model = _int8(buffer.getvalue(), net) if int8 else buffer.getvalue()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def _onnx_forward(session) -> Callable[[torch.Tensor], torch.Tensor]:
    import onnxruntime
    import torch

    def run(x: torch.Tensor) -> torch.Tensor:
        check_stop()
        stop = getattr(_local, "stop", None)
        options = onnxruntime.RunOptions()
        done = threading.Event()

        def watch() -> None:  # a set stop terminates the run within ~20 ms
            while not done.wait(0.02):
                if stop.is_set():
                    options.terminate = True
                    return

        watcher = threading.Thread(target=watch, daemon=True) if stop is not None else None
        if watcher is not None:
            watcher.start()
        try:
            (y,) = session.run(None, {"x": x.cpu().contiguous().numpy()}, options)
        except Exception:
            check_stop()  # a terminated run is a cancel, anything else an error
            raise
        finally:
            done.set()
        return torch.from_numpy(y)

    return run


_RUNNERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def runner(model: torch.nn.Module, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """The forward pass of ``model`` on ``device`` for inference: logits of a batch whose
    sides are multiples of ``model.divisor``, moved to ``device`` (its layout). Call it under
    ``torch.inference_mode``. Built once per model, device, backend and weights."""
    engine = backend(device)
    key = (engine, _weights_key(model))
    cached = _RUNNERS.get(model, {}).get(str(device))
    if cached is None or cached[0] != key:
        net = folded(model)
        if engine.startswith("onnxruntime"):  # the model may sit on a GPU that ran out
            run = _onnx_forward(_onnx_session(net.cpu(), int8=engine == "onnxruntime-int8"))
        else:
            layout = memory_format(device)
            net = net.to(device, memory_format=layout)

            def run(x: torch.Tensor) -> torch.Tensor:
                return net(x.to(device, memory_format=layout))

        cached = key, run
        _RUNNERS.setdefault(model, {})[str(device)] = cached
    return cached[1]
