"""An image segmented in bounded memory (large.py) holds exactly the nuclei of segment()."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from conftest import small_sample_folders
from napari_nucleiseg.inference import drain
from napari_nucleiseg.io import read_sample
from napari_nucleiseg.large import segment_large, segment_large_array, zarr_array
from napari_nucleiseg.models import load_model
from napari_nucleiseg.pipeline import Cancelled, segment
from napari_nucleiseg.stitch import canonical

zarr = pytest.importorskip("zarr")


@pytest.fixture(scope="module")
def unet():
    return load_model("dsb2018-unet")


def mosaic(colour: bool) -> np.ndarray:
    """A 700x900 mosaic of the real samples (flipped copies fill it), grey or RGB."""
    images = []
    for folder in small_sample_folders():
        image = read_sample(folder).image[..., :3]
        images.append(image if colour else image.mean(axis=-1).astype(np.uint8))
    side = 256
    out = np.zeros((700, 900, 3) if colour else (700, 900), np.uint8)
    k = 0
    for y in range(0, 700, side):
        for x in range(0, 900, side):
            tile = images[k % len(images)][:side, :side]
            tile = tile[::-1] if k % 2 else tile
            h, w = min(side, 700 - y, tile.shape[0]), min(side, 900 - x, tile.shape[1])
            out[y : y + h, x : x + w] = tile[:h, :w]
            k += 1
    return out


def whole(unet, image, **options) -> np.ndarray:
    model, config = unet
    _, (labels,) = drain(segment(model, config, image, **options))
    return canonical(labels)


@pytest.mark.parametrize("colour", [False, True])
def test_bounded_path_equals_segment_exactly(unet, colour):
    """Network tiles of 256 px (bands, reflection at the bottom and right) and
    post-processing chunks of 300 px with a 40-px halo: the nuclei of segment()."""
    model, config = unet
    image = mosaic(colour)
    expected = whole(unet, image, tile_size=256)
    assert expected.max() > 50
    got = segment_large_array(model, config, image, tile_size=256, chunk=300, halo=40)
    np.testing.assert_array_equal(got, expected)


def test_a_tiled_tiff_read_lazily_into_zarr_labels(unet, tmp_path):
    model, config = unet
    image = mosaic(False)
    path = tmp_path / "mosaic.tif"
    tifffile.imwrite(path, image, tile=(128, 128), compression="zlib")
    store = tifffile.imread(path, aszarr=True)
    try:
        lazy = zarr.open(store, mode="r")
        labels = zarr_array(tmp_path / "labels.zarr", image.shape, "u4", chunk=256)
        scratch = tmp_path / "scratch"
        scratch.mkdir()
        steps = []
        n = drain(
            segment_large(model, config, lazy, labels, tile_size=512, chunk=256, scratch=scratch),
            steps.append,
        )
    finally:
        store.close()
    expected = whole(unet, image, tile_size=512)
    assert n == expected.max()
    np.testing.assert_array_equal(labels[:], expected)
    assert list(scratch.iterdir()) == []  # the maps are gone
    fractions = [s.fraction for s in steps]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any("tile" in s.text for s in steps) and any("post-processing" in s.text for s in steps)


def test_flat_image_has_no_nuclei(unet):
    model, config = unet
    labels = segment_large_array(model, config, np.full((300, 400), 37, np.uint8))
    assert labels.max() == 0


def test_cancel_stops_and_leaves_no_maps(unet, tmp_path):
    model, config = unet
    stop = threading.Event()
    run = segment_large(
        model, config, mosaic(False), np.zeros((700, 900), np.uint32),
        tile_size=256, stop=stop, scratch=tmp_path,
    )  # fmt: skip
    next(run)
    stop.set()
    with pytest.raises(Cancelled):
        drain(run)
    assert list(Path(tmp_path).iterdir()) == []


@pytest.mark.parametrize("diameter", [9, 60])  # shrunk 2.2x (anti-aliased), enlarged 1.13x
def test_an_image_resized_for_the_network_tile_by_tile_equals_segment(unet, diameter):
    """Nuclei outside the model's range: the image is resized for the network a tile at a
    time and the maps back a window at a time, to exactly segment()'s values."""
    model, config = unet
    image = mosaic(False)
    expected = whole(unet, image, diameter=diameter, tile_size=256)
    assert expected.max() > 20
    got = segment_large_array(
        model, config, image, diameter=diameter, tile_size=256, chunk=300, halo=40
    )
    np.testing.assert_array_equal(got, expected)


def cli(*args, large_pixels: int | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if large_pixels is not None:
        env["NUCLEISEG_LARGE_PIXELS"] = str(large_pixels)
    command = [sys.executable, "-m", "napari_nucleiseg.cli", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)


def test_predict_segments_a_large_tiff_in_bounded_memory_as_in_memory(tmp_path):
    """The user's path: ``nucleiseg predict`` on a TIFF over the bound (set low here) writes
    TIFF, OME-TIFF and OME-Zarr labels from disk, with the nuclei of the in-memory run."""
    image = mosaic(False)
    path = tmp_path / "mosaic.tif"
    tifffile.imwrite(path, image, tile=(256, 256))
    formats = "tiff,ome-tiff,ome-zarr"
    large = cli("predict", path, "-o", tmp_path / "large", "--format", formats, large_pixels=10**5)
    assert large.returncode == 0, large.stderr
    small = cli("predict", path, "-o", tmp_path / "small", "--format", "tiff")
    assert small.returncode == 0, small.stderr
    expected = canonical(tifffile.imread(tmp_path / "small" / "mosaic.tif"))
    assert expected.max() > 50
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "large" / "mosaic.tif"), expected)
    with tifffile.TiffFile(tmp_path / "large" / "mosaic.ome.tif") as tif:
        assert tif.is_ome
        np.testing.assert_array_equal(tif.asarray(), expected)
    group = zarr.open_group(
        str(tmp_path / "large" / "mosaic.ome.zarr" / "labels" / "nuclei"), mode="r"
    )
    level0 = group.attrs["multiscales"][0]["datasets"][0]["path"]
    np.testing.assert_array_equal(group[level0][:], expected)
    # nothing is left of the maps and labels the run kept on disk
    assert sorted(p.name for p in (tmp_path / "large").iterdir()) == [
        "mosaic.ome.tif", "mosaic.ome.zarr", "mosaic.tif",
    ]  # fmt: skip


def test_outlines_of_a_large_image_are_refused_before_anything_runs(tmp_path):
    path = tmp_path / "mosaic.tif"
    tifffile.imwrite(path, mosaic(False))
    result = cli(
        "predict", path, "-o", tmp_path / "out", "--format", "tiff,roi", large_pixels=10**5
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "mosaic.tif" in result.stderr and "label images only" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_stopped_large_run_leaves_nothing_and_the_next_run_completes(tmp_path, sig):
    """A real process stopped while its maps are on disk: SIGTERM cleans up at once (status
    130); what SIGKILL leaves (the hidden scratch folder of a dead process) the next run
    removes. No output file is ever there half written."""
    image = np.concatenate([mosaic(False)] * 3, axis=1)  # 700x2700: a few seconds of network
    path = tmp_path / "wide.tif"
    tifffile.imwrite(path, image, tile=(256, 256))
    out = tmp_path / "out"
    env = dict(os.environ, NUCLEISEG_LARGE_PIXELS="100000")
    args = [
        sys.executable,
        "-m",
        "napari_nucleiseg.cli",
        "predict",
        path,
        "-o",
        out,
        "--diameter",
        "none",
    ]
    proc = subprocess.Popen(
        list(map(str, args)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    deadline = time.monotonic() + 120
    while (
        not list(out.glob(".wide.scratch.*.partial/.nucleiseg-maps-*/maps.zarr"))
        and time.monotonic() < deadline
    ):
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.01)
    time.sleep(0.5)  # the network is running, its maps half on disk
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    left = sorted(p.name for p in out.iterdir())
    if sig == signal.SIGTERM:
        assert proc.returncode == 130 and "Traceback" not in stderr, stderr
        assert left == []
    else:
        assert proc.returncode == -signal.SIGKILL
        assert len(left) == 1 and left[0].startswith(".wide.scratch.")
    again = subprocess.run(
        list(map(str, args)), capture_output=True, text=True, env=env, timeout=300
    )
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in out.iterdir()) == ["wide.tif"]
    labels = tifffile.imread(out / "wide.tif")
    assert labels.shape == image.shape and labels.max() > 100


@pytest.mark.parametrize("colour", [False, True])
def test_an_ome_zarr_image_is_an_input_read_lazily(tmp_path, colour):
    """An OME-Zarr image (here one written by our own writer, grey as yx, RGB as cyx) is an
    input of ``predict``: read whole when small, a chunk at a time when large, with the same
    nuclei as the TIFF of the same image, and its pixel size."""
    from napari_nucleiseg.io.formats import write_ome_zarr
    from napari_nucleiseg.io.metadata import pixel_size_of

    image = mosaic(colour)
    source = tmp_path / "mosaic.ome.zarr"
    write_ome_zarr(source, np.zeros(image.shape[:2], np.uint16), image, pixel_size=(0.5, 0.5))
    assert pixel_size_of(source) == (0.5, 0.5)
    tifffile.imwrite(tmp_path / "same.tif", image)
    reference = cli("predict", tmp_path / "same.tif", "-o", tmp_path / "ref", "--diameter", "none")
    assert reference.returncode == 0, reference.stderr
    expected = canonical(tifffile.imread(tmp_path / "ref" / "same.tif"))
    for name, bound in (("small", None), ("large", 10**5)):
        run = cli(
            "predict", source, "-o", tmp_path / name, "--diameter", "none", large_pixels=bound
        )
        assert run.returncode == 0, run.stderr
        got = tifffile.imread(tmp_path / name / "mosaic.tif")
        np.testing.assert_array_equal(canonical(got), expected)


def test_tiffs_are_opened_lazily_or_refused_when_their_blocks_are_too_large(tmp_path, monkeypatch):
    from napari_nucleiseg.errors import FileProblem
    from napari_nucleiseg.io import images

    image = mosaic(False)
    plain = tmp_path / "plain.tif"  # uncompressed in one piece: mapped, pages read where touched
    tifffile.imwrite(plain, image)
    array, close = images.open_lazily(plain)
    assert isinstance(array, np.memmap) and np.array_equal(
        array[100:200, 5:50], image[100:200, 5:50]
    )
    close()
    striped = tmp_path / "striped.tif"  # compressed in one strip: each read decodes all of it
    tifffile.imwrite(striped, image, compression="zlib", rowsperstrip=image.shape[0])
    monkeypatch.setattr(images, "MAX_BLOCK_PIXELS", 1000)
    with pytest.raises(FileProblem, match="striped.tif.*blocks of 700x900.*tiled TIFF"):
        images.open_lazily(striped)


def test_a_corrupt_tile_of_a_large_tiff_is_one_line_and_leaves_nothing(tmp_path):
    path = tmp_path / "broken.tif"
    tifffile.imwrite(path, mosaic(False), tile=(256, 256), compression="zlib")
    with tifffile.TiffFile(path) as tif:
        offset, size = tif.pages[0].dataoffsets[4], tif.pages[0].databytecounts[4]
    with open(path, "r+b") as f:  # the middle tile's compressed bytes become garbage
        f.seek(offset)
        f.write(b"\xff" * size)
    out = tmp_path / "out"
    result = cli("predict", path, "-o", out, "--diameter", "none", large_pixels=10**5)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr and "broken.tif" in lines[-1], result.stderr
    assert "could not be segmented" in lines[-1]
    assert list(out.iterdir()) == []


def test_a_clump_over_the_bound_is_segmented_and_said_in_one_line(tmp_path, monkeypatch, capsys):
    """``nucleiseg predict`` on an image whose clumps pass MAX_CLUMP_PIXELS (the bounds set
    low here, chunks of 128 px) writes the labels of the run within the bound and says, in
    one line of its own, that they were resolved in pieces."""
    import napari_nucleiseg.large as large
    import napari_nucleiseg.stitch as stitch
    from napari_nucleiseg.cli import main

    path = tmp_path / "mosaic.tif"
    tifffile.imwrite(path, mosaic(False), tile=(256, 256))
    monkeypatch.setattr(large, "LARGE_PIXELS", 10**5)
    chunked = stitch.stitched_labels

    def small_chunks(maps, out, post, **options):
        return chunked(maps, out, post, **{**options, "chunk": 128, "halo": 32})

    monkeypatch.setattr(large, "stitched_labels", small_chunks)

    def predict(out):
        argv = ["predict", str(path), "-o", str(out), "--format", "tiff", "--model", "dsb2018-unet"]
        assert main(argv) == 0
        return canonical(tifffile.imread(out / "mosaic.tif")), capsys.readouterr().err

    within, said = predict(tmp_path / "within")
    assert "warning" not in said and within.max() > 20
    monkeypatch.setattr(stitch, "MAX_CLUMP_PIXELS", 80 * 80)
    beyond, said = predict(tmp_path / "beyond")
    assert "nucleiseg predict: warning: touching nuclei connected over more than 6400" in said
    assert "stitch.py" not in said  # the user's line, not a source location
    # the pieces reach 128 px beyond (4 halos), enough here for the same nuclei; 64 px was
    # not: the mosaic's seams make nuclei over 100 px long
    np.testing.assert_array_equal(beyond, within)
