"""The ``nucleiseg`` command line: thin wrappers over the core functions.

One module per sub-command, each with its ``add_parser(sub)`` and ``cmd_*``;
this module assembles the parser and runs the command. Progress goes to
stderr; a bad input ends the command with status 1 and a one-line reason
naming the file. The modules import PyTorch only inside the commands that run
a network.
"""

from __future__ import annotations

import argparse
import functools
import logging
import math
import os
import signal
import sys
import warnings
from collections.abc import Iterable

from tqdm import tqdm

from .. import __version__
from ..devices import DEVICES
from ..errors import NucleisegError
from ..io import stage1
from ..runner import BACKENDS


def progress(items: Iterable, desc: str) -> tqdm:
    """``items`` with a progress bar on stderr (none when stderr is not a terminal)."""
    return tqdm(
        items, desc=desc, unit="image", file=sys.stderr, leave=False, disable=None
    )  # disable=None: no bar when stderr is not a terminal


def progress_bar(total: int, desc: str) -> tqdm:
    """A bar of ``total`` images on stderr, advanced by fractions (none when not a terminal)."""
    return tqdm(
        total=total, desc=desc, unit="image", file=sys.stderr, leave=False, disable=None,
        bar_format="{l_bar}{bar}| {n:.1f}/{total} [{elapsed}<{remaining}]",
    )  # fmt: skip


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default in ``--help``, but not "None" nor a flag's "False"."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False:
            return action.help or ""
        return super()._get_help_string(action)


def positive_number(text: str) -> float:
    """An option's value that must be a finite number above 0 (an argparse type)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number above 0, got {text!r}")
    return value


def number_within(low: float, high: float, *, integer: bool = False, below_high: bool = False):
    """An argparse type: a number from ``low`` to ``high`` (below it with ``below_high``), a
    whole one with ``integer``."""

    def parse(text: str) -> float | int:
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            value = math.nan
        if not (low <= value < high if below_high else low <= value <= high):
            kind = "a whole number" if integer else "a number"
            end = f"below {high}" if below_high else f"to {high}"
            raise argparse.ArgumentTypeError(f"expected {kind} from {low} {end}, got {text!r}")
        return value

    return parse


def add_device(p: argparse.ArgumentParser) -> None:
    """The ``--device`` option of the commands that run a network."""
    p.add_argument(
        "--device",
        default="auto",
        choices=DEVICES,
        help="where the network runs; auto: CUDA, then Apple MPS, then CPU",
    )
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        help="what runs the network on the CPU; auto (default): ONNX Runtime in 8 bits "
        "(onnxruntime-int8) where installed, else PyTorch; onnxruntime: ONNX Runtime in float "
        "(the labels of PyTorch, 1.6x slower than 8 bits); torch: PyTorch (also set by the "
        "NUCLEISEG_BACKEND variable)",
    )


def use_backend(args: argparse.Namespace, device, exact: bool = False) -> None:
    """Make ``--backend`` this process's choice (and its local Dask workers'), and check it
    can run on ``device`` before any work starts. ``exact``: where nothing was asked for,
    float rather than int8 (training's validation and tuning: choices that should not
    depend on the machine's backend)."""
    from ..runner import BACKEND_VARIABLE, asked_backend, backend

    if args.backend:
        os.environ[BACKEND_VARIABLE] = args.backend
    try:
        chosen = backend(device)
    except ValueError as exc:
        raise NucleisegError(str(exc)) from None
    if exact and chosen == "onnxruntime-int8" and asked_backend() == "auto":
        os.environ[BACKEND_VARIABLE] = "onnxruntime"


def add_pixel_size(p: argparse.ArgumentParser) -> None:
    """The ``--pixel-size`` option of the commands that measure."""
    p.add_argument(
        "--pixel-size",
        type=float,
        metavar="UM",
        help="µm per pixel; default: what an OME-TIFF or ImageJ TIFF records, else pixels",
    )


def build_parser() -> argparse.ArgumentParser:
    # the sub-command modules import this package's helpers, so they are imported once it is
    from . import check, evaluate, export, measure, predict, samples, train

    parser_class = functools.partial(argparse.ArgumentParser, formatter_class=_HelpFormatter)
    parser = parser_class(
        prog="nucleiseg", description="Nucleus segmentation for DSB2018-style data."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=parser_class)
    for command in (check, evaluate, export, samples, predict, measure, train):
        command.add_parser(sub)
    return parser


def _one_line(command: str, show):
    """``warnings.showwarning`` that says the package's own warnings as the command's lines
    (a user reads "nucleiseg predict: warning: ...", not a source file and line number)."""

    def say(message, category, filename, lineno, file=None, line=None):
        if category.__module__.startswith(__package__.split(".")[0]):
            print(f"nucleiseg {command}: warning: {message}", file=file or sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    return say


def _interrupt(signum: int, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: the clean-up is not interrupted
    raise KeyboardInterrupt  # SIGTERM cleans up as Ctrl+C does: no partial file stays


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", stage1.OverlapWarning)
            warnings.showwarning = _one_line(args.command, warnings.showwarning)
            return args.func(args)
    except NucleisegError as exc:
        _quiet_pending_reads()
        print(f"nucleiseg {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. piped into `head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        _quiet_pending_reads()
        print(f"nucleiseg {args.command}: interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """The ``nucleiseg`` command: :func:`main`, with SIGTERM handled as Ctrl+C."""
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        code = main()
    except KeyboardInterrupt:  # one that came after main's own handler: still a clean stop
        code = 130
    sys.exit(code)


def _quiet_pending_reads() -> None:
    """A run stopped mid-read leaves Zarr's other reads pending in its I/O thread; they are
    dropped at exit, and asyncio would print them after the one line that says why."""
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", message="coroutine .* was never awaited")
