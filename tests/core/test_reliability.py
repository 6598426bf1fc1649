"""Nothing lost, no traceback: the command line under bad inputs, signals and leftovers.

Every case runs ``nucleiseg`` as a subprocess, as a user or a batch script does,
and kills it with real signals. docs/reliability.md lists what is guaranteed.
"""

from __future__ import annotations

import os
import resource
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from conftest import SHARED
from napari_nucleiseg.inference import drain
from napari_nucleiseg.io import read_sample, stage1
from napari_nucleiseg.models import DEFAULT_MODEL, load_model, shipped_models
from napari_nucleiseg.models.checkpoint import FORMAT, VERSION, read_checkpoint
from napari_nucleiseg.pipeline import segment
from napari_nucleiseg.preprocess import MIN_CONTRAST, contrast
from napari_nucleiseg.samples import sample_folder

CLI = [sys.executable, "-m", "napari_nucleiseg.cli"]
N_BATCH = 24


def nucleiseg(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, *map(str, args)], capture_output=True, text=True, timeout=300, **kwargs
    )


def refused(result: subprocess.CompletedProcess, *names) -> str:
    """The one-line reason of a refusal (exit status 1, no traceback), naming ``names``."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert "error:" in line, result.stderr
    for name in names:
        assert str(name) in line, line
    return line


@pytest.fixture
def image(tmp_path) -> Path:
    """A real fluorescence image as a PNG in its own folder."""
    folder = tmp_path / "in"
    folder.mkdir()
    path = folder / "cells.png"
    Image.fromarray(read_sample(sample_folder("fluorescence")).image).save(path)
    return path


# ------------------------------------------------------------------ one line, naming the file
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_a_float_tiff_with_nan_or_inf(tmp_path, tiny_checkpoint, value):
    data = np.full((64, 64), 10.0, np.float32)
    data[5, 5] = value
    path = tmp_path / "bad.tif"
    tifffile.imwrite(path, data)
    result = nucleiseg("predict", path, "-o", tmp_path / "out", "--model", tiny_checkpoint)
    assert "NaN or infinite" in refused(result, path)


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header announces ``width`` x ``height`` (and no pixels follow)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path


def test_a_png_over_the_pixel_limit_is_refused_before_any_image(tmp_path, image, tiny_checkpoint):
    huge = png_header_only(image.parent / "huge.png", 20000, 20000)
    out = tmp_path / "out"
    result = nucleiseg("predict", image.parent, "-o", out, "--model", tiny_checkpoint)
    assert "exceeds limit" in refused(result, huge)
    assert not out.exists()  # refused before the first image: no empty output folder


def test_a_corrupt_input_leaves_no_output_folder(tmp_path, image, tiny_checkpoint):
    (image.parent / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "out"
    result = nucleiseg("predict", image.parent, "-o", out, "--model", tiny_checkpoint)
    refused(result, image.parent / "broken.png")
    assert not out.exists()


@pytest.mark.parametrize("where", ["missing folder", "a file", "a folder"])
def test_the_submission_path_is_checked_before_any_image(tmp_path, image, tiny_checkpoint, where):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    (tmp_path / "taken.csv").mkdir()
    submission = {
        "missing folder": tmp_path / "nowhere" / "sub.csv",
        "a file": blocker / "sub.csv",
        "a folder": tmp_path / "taken.csv",
    }[where]
    out = tmp_path / "out"
    args = ("predict", image, "-o", out, "--model", tiny_checkpoint, "--submission", submission)
    refused(nucleiseg(*args))
    assert not out.exists()


def test_output_that_is_a_file(tmp_path, image, tiny_checkpoint):
    out = tmp_path / "out"
    out.write_text("not a folder")
    assert "takes a folder" in refused(
        nucleiseg("predict", image, "-o", out, "--model", tiny_checkpoint), out
    )


def test_a_symbolic_link_loop_is_named_as_one(tmp_path, tiny_checkpoint):
    loop = tmp_path / "loop.png"
    loop.symlink_to(tmp_path / "loop.png")
    line = refused(nucleiseg("predict", loop, "-o", tmp_path / "out", "--model", tiny_checkpoint))
    assert "symbolic link" in line and "does not exist" not in line


def test_a_hard_link_of_an_input_is_never_replaced(tmp_path, image, tiny_checkpoint):
    out = tmp_path / "out"
    out.mkdir()
    tif = image.with_suffix(".tif")
    tifffile.imwrite(tif, np.asarray(Image.open(image)))
    os.link(tif, out / "cells.tif")  # the output's name is another name of the input
    before = tif.read_bytes()
    args = ("predict", tif, "-o", out, "--overwrite", "--model", tiny_checkpoint)
    assert "is an input" in refused(nucleiseg(*args))
    assert tif.read_bytes() == before


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"ImageId,EncodedPixels\ncells,1 2 " + b"9" * 25 + b" 3\n", "whole numbers"),
        (b"ImageId,EncodedPixels\ncells,1 2\xff\xfe\n", "not UTF-8"),
        (b"ImageId,EncodedPixels\nunknown,5 2 1 1\n", "overlap"),  # an id not in the truth
    ],
    ids=["25-digit run", "not UTF-8", "bad runs of an unknown id"],
)
def test_bad_submissions_are_one_line(tmp_path, content, expected):
    truth = tmp_path / "truth"
    truth.mkdir()
    tifffile.imwrite(truth / "cells.tif", np.zeros((8, 8), np.uint16))
    csv = tmp_path / "sub.csv"
    csv.write_bytes(content)
    assert expected in refused(nucleiseg("evaluate", csv, truth), csv)


def test_a_submission_with_a_byte_order_mark_is_read(tmp_path):
    truth = tmp_path / "truth"
    truth.mkdir()
    labels = np.zeros((8, 8), np.uint16)
    labels[2:4, 2:4] = 1
    tifffile.imwrite(truth / "cells.tif", labels)
    csv = tmp_path / "sub.csv"
    csv.write_bytes("\ufeffImageId,EncodedPixels\ncells,19 2 27 2\n".encode())
    result = nucleiseg("evaluate", csv, truth, "--json")
    assert result.returncode == 0, result.stderr
    assert '"score": 1.0' in result.stdout


# ------------------------------------------------------------------ checkpoints
def checkpoint_like(source: Path, path: Path, **arguments) -> Path:
    """A copy of a checkpoint whose config asks for other network arguments."""
    import json

    payload = torch.load(source, weights_only=True)
    config = json.loads(payload["config"])
    config["arch_kwargs"].update(arguments)
    payload["config"] = json.dumps(config)
    torch.save(payload, path)
    return path


def limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))


def test_a_checkpoint_asking_for_a_huge_network_is_refused_without_building_it(
    tmp_path, image, tiny_checkpoint
):
    payload = torch.load(tiny_checkpoint, weights_only=True)
    assert payload["format"] == FORMAT and payload["version"] == VERSION
    big = checkpoint_like(tiny_checkpoint, tmp_path / "big.pt", base=2048, depth=6)
    result = subprocess.run(
        [*CLI, "predict", str(image), "-o", str(tmp_path / "out"), "--model", str(big)],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=limit_memory,
    )  # fmt: skip  (a 4.8 GB network would not fit under 3 GB of address space)
    assert "weights do not fit" in refused(result, big)


def test_a_pickled_model_is_refused_in_one_line(tmp_path, image):
    raw = tmp_path / "raw.pt"
    torch.save(torch.nn.Conv2d(1, 1, 3), raw)  # a whole pickled module, not our format
    result = nucleiseg("predict", image, "-o", tmp_path / "out", "--model", raw)
    line = refused(result, raw)
    assert "pickled Python objects" in line
    assert "weights_only" not in result.stderr and "\x1b[" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1  # no torch warnings either
    with pytest.raises(Exception, match="pickled"):
        read_checkpoint(raw)


# ------------------------------------------------------------------ no nuclei from nothing
def flat_and_noise() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "137 +- 1": rng.integers(136, 139, (256, 256)).astype(np.uint8),
        "uniform noise 256x256": rng.integers(0, 256, (256, 256)).astype(np.uint8),
        "uniform noise 520x696": rng.integers(0, 256, (520, 696)).astype(np.uint8),
        "Gaussian noise, float": rng.normal(100, 10, (256, 256)).astype(np.float32),
        "16-bit flat": np.full((128, 128), 4000, np.uint16),
    }


@pytest.mark.skipif(not shipped_models(), reason="no shipped weights in this checkout")
def test_an_image_without_nuclei_gives_none():
    model, config = load_model(DEFAULT_MODEL)
    for name, array in flat_and_noise().items():
        assert contrast(array) < MIN_CONTRAST, name
        _, labels = drain(segment(model, config, array))
        assert labels.max() == 0, f"{name}: {labels.max()} nuclei"
    real = read_sample(sample_folder("fluorescence"))
    assert contrast(real.image) > 3 * MIN_CONTRAST
    _, labels = drain(segment(model, config, real.image))
    assert labels.max() >= 40  # 57 true nuclei


@pytest.mark.slow
def test_every_real_training_image_is_well_above_the_contrast_floor():
    """The floor's margin, re-measured on the 670 stage-1 images (all at 30 or more)."""
    root = SHARED / "stage1_train"
    if not root.is_dir():
        pytest.skip(f"the stage-1 training set is not at {root}")
    lowest = min(contrast(stage1.read_image(f)) for f in stage1.list_samples(root))
    assert lowest >= 3 * MIN_CONTRAST, lowest


# ------------------------------------------------------------------ signals, leftovers, resume
@pytest.fixture
def batch(tmp_path) -> Path:
    """24 512x512 images (real nuclei, tiled), a fraction of a second each: a batch long
    enough to be interrupted once its first output exists, even on a loaded machine."""
    folder = tmp_path / "batch"
    folder.mkdir()
    grey = read_sample(sample_folder("fluorescence")).image
    grey = grey if grey.ndim == 2 else grey[..., :3].mean(-1).astype(np.uint8)
    big = np.tile(grey, (2, 2))
    for k in range(N_BATCH):
        Image.fromarray(np.roll(big, 17 * k, axis=1)).save(folder / f"img{k:02d}.png")
    return folder


def partials(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob(".*partial"))


def start_and_stop(args: list, out: Path, sig: int) -> subprocess.CompletedProcess:
    """Start ``nucleiseg`` and send ``sig`` once its first output exists.

    The child gets SIGINT's default action back, as in a terminal: a test run started in
    the background by a shell without job control inherits SIGINT ignored, and Python
    then raises no KeyboardInterrupt."""
    proc = subprocess.Popen(
        [*CLI, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not list(out.glob("*.tif")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_batch_cleans_up_and_resumes(tmp_path, batch, tiny_checkpoint, sig):
    out = tmp_path / "out"
    sub = tmp_path / "sub.csv"
    args = ["predict", batch, "-o", out, "--model", tiny_checkpoint, "--submission", sub]
    stopped = start_and_stop(args, out, sig)
    assert stopped.returncode == 130, stopped.stderr
    assert stopped.stderr.strip().splitlines()[-1].endswith("interrupted")
    assert "Traceback" not in stopped.stderr
    assert partials(out) == [] and partials(tmp_path) == [] and not sub.exists()
    first = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tif")}
    assert 0 < len(first) < N_BATCH
    again = nucleiseg(*args)  # no flag: the earlier outputs are refused, and --resume named
    assert "--resume" in refused(again)
    resumed = nucleiseg(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(first)} done by an earlier run" in resumed.stderr
    assert len(list(out.glob("*.tif"))) == N_BATCH and sub.is_file()
    assert {n: (out / n).stat().st_mtime_ns for n in first} == first  # kept, not redone
    assert partials(out) == []


def test_an_interrupted_batch_of_every_format_resumes_whole(tmp_path, batch, tiny_checkpoint):
    out = tmp_path / "out"
    formats = "tiff,roi,geojson,ome-tiff,ome-zarr"
    args = ["predict", batch, "-o", out, "--model", tiny_checkpoint, "--format", formats]
    stopped = start_and_stop([*args, "--measure"], out, signal.SIGTERM)
    assert stopped.returncode == 130, stopped.stderr
    assert partials(out) == [] and not (out / "measurements.csv").exists()
    first = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tif")}
    assert 0 < len(first) < N_BATCH
    resumed = nucleiseg(*args, "--measure", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    ids = sorted(p.stem for p in batch.glob("*.png"))
    for suffix in (".tif", ".zip", ".geojson", ".ome.tif", ".ome.zarr"):
        names = [p.name for p in out.glob(f"*{suffix}")]
        stems = sorted(n[: -len(suffix)] for n in names if not n[: -len(suffix)].endswith(".ome"))
        assert stems == ids, suffix
    assert partials(out) == []
    rows = (out / "measurements.csv").read_text().splitlines()
    assert sorted({r.split(",")[0] for r in rows[1:]}) == ids  # every image, resumed or not


def test_a_killed_batch_leaves_nothing_the_next_run_keeps(tmp_path, batch, tiny_checkpoint):
    out = tmp_path / "out"
    args = ["predict", batch, "-o", out, "--model", tiny_checkpoint]
    killed = start_and_stop(args, out, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    # what a kill in the middle of a write leaves: a hidden file of a process that is gone
    stale = out / f".img{N_BATCH - 1:02d}.tif.99999999.partial"
    stale.write_bytes(b"half a TIFF")
    mine = out / f".img{N_BATCH - 1:02d}.tif.{os.getpid()}.partial"  # a live process's: not touched
    mine.write_bytes(b"being written")
    zarr = out / f".img{N_BATCH - 1:02d}.ome.zarr.99999999.partial"  # a folder output's
    (zarr / "labels").mkdir(parents=True)
    resumed = nucleiseg(*args, "--resume", "--format", "tiff,ome-zarr")
    assert resumed.returncode == 0, resumed.stderr
    assert not stale.exists() and mine.exists() and not zarr.exists()
    assert len(list(out.glob("*.tif"))) == N_BATCH
    scored = nucleiseg("evaluate", out, out)  # hidden partial files are never taken as results
    assert f"over {N_BATCH} image(s)" in scored.stdout, scored.stdout + scored.stderr


def test_outputs_beside_the_inputs_leave_every_input_as_it_was(tmp_path, batch, tiny_checkpoint):
    pngs = {p: p.read_bytes() for p in batch.glob("*.png")}
    args = ["predict", batch, "-o", batch, "--overwrite", "--model", tiny_checkpoint]
    result = nucleiseg(*args)  # -o INPUT_FOLDER: <id>.tif beside each <id>.png
    assert result.returncode == 0, result.stderr
    assert {p: p.read_bytes() for p in batch.glob("*.png")} == pngs
    assert sorted(p.stem for p in batch.glob("*.tif")) == sorted(p.stem for p in pngs)
