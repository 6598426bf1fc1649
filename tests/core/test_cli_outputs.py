"""``nucleiseg measure`` as a user runs it (a subprocess), and ``nucleiseg predict`` writing
every output format with a measurement table, resumed and refused (in-process ``main``)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import roifile
import tifffile

from conftest import small_sample_folders, tree_digest
from napari_nucleiseg.cli import main
from napari_nucleiseg.io import read_sample
from napari_nucleiseg.io.formats import FORMATS, output_paths
from napari_nucleiseg.io.images import write_label_tiff
from napari_nucleiseg.io.stage1 import OverlapWarning, image_path
from napari_nucleiseg.samples import sample_folder

CLI = [sys.executable, "-m", "napari_nucleiseg.cli"]
ALL_FORMATS = ",".join(FORMATS)
MEASURES = "measurements.csv"


def nucleiseg(*args) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=300)


def refused(code: int, err: str, *names) -> str:
    """The one-line reason of a refusal (status 1, no traceback), naming ``names``."""
    assert code == 1, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "error:" in lines[0], err
    for name in names:
        assert str(name) in lines[0], lines[0]
    return lines[0]


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    return rows[0], [dict(zip(rows[0], r)) for r in rows[1:]]


def quiet_sample(folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OverlapWarning)
        return read_sample(folder)


@pytest.fixture
def measured(tmp_path):
    """The fluorescence sample's image (its PNG as shipped) and its truth labels as a TIFF."""
    folder = sample_folder("fluorescence")
    sample = quiet_sample(folder)
    labels = write_label_tiff(tmp_path / "labels.tif", sample.labels)
    return image_path(folder), labels, sample


def nucleus_areas(labels: np.ndarray) -> list[int]:
    counts = np.bincount(labels.ravel())
    return [int(counts[v]) for v in np.unique(labels) if v]


def test_measure_in_pixels_and_micrometres(tmp_path, measured):
    image, labels, sample = measured
    out = tmp_path / "table.csv"
    result = nucleiseg("measure", image, labels, "-o", out)
    assert result.returncode == 0, result.stderr
    header, rows = read_csv(out)
    assert {"label", "area_px2", "mean_intensity"} <= set(header)
    assert not any(c.endswith(("_um", "_um2")) for c in header)
    present = [int(v) for v in np.unique(sample.labels) if v]
    assert [int(r["label"]) for r in rows] == present
    assert [float(r["area_px2"]) for r in rows] == nucleus_areas(sample.labels)
    grey = sample.image[..., 0].astype(np.float64)
    means = [grey[sample.labels == v].mean() for v in present]
    np.testing.assert_allclose([float(r["mean_intensity"]) for r in rows], means, atol=1e-9)
    assert f"{len(present)} nuclei" in result.stderr

    out_um = tmp_path / "um.csv"
    result = nucleiseg("measure", image, labels, "-o", out_um, "--pixel-size", "0.5")
    assert result.returncode == 0, result.stderr
    header_um, rows_um = read_csv(out_um)
    assert "area_um2" in header_um and "area_px2" not in header_um
    np.testing.assert_allclose(
        [float(r["area_um2"]) for r in rows_um], [0.25 * float(r["area_px2"]) for r in rows]
    )
    np.testing.assert_allclose(
        [float(r["centroid_x_um"]) for r in rows_um],
        [0.5 * float(r["centroid_x_px"]) for r in rows],
    )


def test_measure_reads_the_pixel_size_of_an_imagej_tiff(tmp_path, measured):
    _, labels, sample = measured
    image = tmp_path / "calibrated.tif"
    tifffile.imwrite(
        image, sample.image[..., 0], imagej=True, resolution=(1 / 0.5, 1 / 0.5),
        metadata={"unit": "micron"},
    )  # fmt: skip
    out = tmp_path / "t.csv"
    result = nucleiseg("measure", image, labels, "-o", out)
    assert result.returncode == 0, result.stderr
    header, rows = read_csv(out)
    assert "area_um2" in header and "perimeter_um" in header
    areas = [0.25 * a for a in nucleus_areas(sample.labels)]
    np.testing.assert_allclose([float(r["area_um2"]) for r in rows], areas, rtol=1e-12)
    assert "µm" in result.stderr


def test_measure_refuses_an_existing_table(tmp_path, measured):
    image, labels, _ = measured
    out = tmp_path / "table.csv"
    out.write_bytes(b"precious,table\n1,2\n")
    result = nucleiseg("measure", image, labels, "-o", out)
    refused(result.returncode, result.stderr, out)
    assert "already exists" in result.stderr and "--overwrite" in result.stderr
    assert out.read_bytes() == b"precious,table\n1,2\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.tif", "table.csv"]
    result = nucleiseg("measure", image, labels, "-o", out, "--overwrite")
    assert result.returncode == 0, result.stderr
    header, rows = read_csv(out)
    assert header[0] == "label" and len(rows) > 1


def test_measure_refuses_labels_of_another_size(tmp_path, measured):
    image, _, sample = measured
    wrong = write_label_tiff(tmp_path / "wrong.tif", sample.labels[:-1])
    out = tmp_path / "table.csv"
    result = nucleiseg("measure", image, wrong, "-o", out)
    line = refused(result.returncode, result.stderr, wrong)
    assert image.name in line
    assert not out.exists()


def test_measure_imports_no_pytorch(tmp_path, measured):
    """``nucleiseg measure`` runs no network: it starts without PyTorch."""
    image, labels, _ = measured
    out = tmp_path / "t.csv"
    code = (
        "import sys\n"
        "from napari_nucleiseg.cli import main\n"
        f"code = main(['measure', {str(image)!r}, {str(labels)!r}, '-o', {str(out)!r}])\n"
        "print(code, 'torch' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.stdout.split() == ["0", "False"], result.stdout + result.stderr
    assert out.is_file()


# ---- predict: every format, a measurement table, resume -------------------------------


def predict(*args) -> tuple[int, str]:
    """``nucleiseg predict`` in this process: (status, stderr)."""
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["predict", *map(str, args)])
    return code, err.getvalue()


@pytest.fixture(scope="module")
def batch(tmp_path_factory, tiny_checkpoint):
    """All the small samples (grey and colour, two sizes; the ``small_root`` fixture's
    copy, made once for this module) segmented into every format with a table."""
    root = tmp_path_factory.mktemp("batch") / "small_root"
    for folder in small_sample_folders():
        shutil.copytree(folder, root / folder.name)
    out = root.parent / "out"
    code, err = predict(
        root, "-o", out, "--model", tiny_checkpoint, "--device", "cpu",
        "--format", ALL_FORMATS, "--measure", "--pixel-size", "0.5",
    )  # fmt: skip
    assert code == 0, err
    ids = sorted(p.name for p in root.iterdir())
    return root, out, ids, tiny_checkpoint


def rows_by_image(table: Path) -> dict[str, list[dict]]:
    _, rows = read_csv(table)
    grouped: dict[str, list[dict]] = {}
    for row in rows:
        grouped.setdefault(row["image"], []).append(row)
    return grouped


def test_predict_writes_every_format_per_image(batch):
    root, out, ids, _ = batch
    expected = {p.name for i in ids for p in output_paths(out, i, FORMATS).values()}
    assert {p.name for p in out.iterdir()} == expected | {MEASURES}
    for image_id in ids:
        paths = output_paths(out, image_id, FORMATS)
        labels = tifffile.imread(paths["tiff"])
        shape = quiet_sample(root / image_id).image.shape[:2]
        assert labels.shape == shape and labels.max() > 0, image_id
        assert np.array_equal(tifffile.imread(paths["ome-tiff"]), labels)
        with tifffile.TiffFile(paths["ome-tiff"]) as tif:
            assert 'PhysicalSizeX="0.5"' in tif.ome_metadata
        present = [int(v) for v in np.unique(labels) if v]
        rois = roifile.roiread(paths["roi"])
        assert [r.name for r in rois] == [f"{v:04d}" for v in present]
        features = json.loads(paths["geojson"].read_text(encoding="utf-8"))["features"]
        assert [f["properties"]["label"] for f in features] == present
        assert all("area_um2" in f["properties"]["measurements"] for f in features)
        assert paths["ome-zarr"].is_dir() and (paths["ome-zarr"] / "labels" / "nuclei").is_dir()


def test_predict_measurements_cover_every_nucleus(batch):
    _, out, ids, _ = batch
    header, _ = read_csv(out / MEASURES)
    assert header[:2] == ["image", "label"] and "area_um2" in header
    grouped = rows_by_image(out / MEASURES)
    assert sorted(grouped) == ids
    for image_id in ids:
        labels = tifffile.imread(out / f"{image_id}.tif")
        rows = grouped[image_id]
        assert [int(r["label"]) for r in rows] == [int(v) for v in np.unique(labels) if v]
        areas = [0.25 * a for a in nucleus_areas(labels)]
        np.testing.assert_allclose([float(r["area_um2"]) for r in rows], areas, rtol=1e-12)


def test_predict_measurements_of_grey_and_colour_images_line_up(batch):
    """The batch holds grey images (one intensity channel) and an H&E one (three): every
    row of the one CSV has a cell per column of its header."""
    _, out, _, _ = batch
    with open(out / MEASURES, newline="", encoding="utf-8") as f:
        header, *rows = list(csv.reader(f))
    widths = sorted({len(r) for r in rows})
    assert widths == [len(header)], (len(header), widths)


def outputs_of(out: Path, image_id: str) -> list[Path]:
    return list(output_paths(out, image_id, FORMATS).values())


def stamps(paths) -> dict:
    return {p: (os.stat(p).st_ino, os.stat(p).st_mtime_ns) for p in paths}


def test_predict_resume_redoes_only_the_missing(tmp_path, batch):
    root, done, ids, model = batch
    out = tmp_path / "out"
    shutil.copytree(done, out)
    gone, partial, kept = ids
    for path in outputs_of(out, gone):  # an image whose outputs were all deleted
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    # and one an interrupted run left half-written: its label TIFF but not its GeoJSON
    output_paths(out, partial, ["geojson"])["geojson"].unlink()
    untouched = stamps(outputs_of(out, kept))
    code, err = predict(
        root, "-o", out, "--model", model, "--device", "cpu", "--format", ALL_FORMATS,
        "--measure", "--pixel-size", "0.5", "--resume",
    )  # fmt: skip
    assert code == 0, err
    assert "segmenting 2 image(s) (1 done by an earlier run)" in err
    assert stamps(outputs_of(out, kept)) == untouched
    for image_id in ids:
        assert all(p.exists() for p in outputs_of(out, image_id)), image_id
        assert np.array_equal(
            tifffile.imread(out / f"{image_id}.tif"), tifffile.imread(done / f"{image_id}.tif")
        )
    grouped = rows_by_image(out / MEASURES)
    assert sorted(grouped) == ids
    assert grouped == rows_by_image(done / MEASURES)


def test_predict_takes_each_images_own_pixel_size(tmp_path, batch):
    """No --pixel-size: an OME-TIFF's own (0.4 µm) reaches the table and the outputs."""
    _, _, _, model = batch
    image = tmp_path / "cells.ome.tif"
    grey = quiet_sample(sample_folder("fluorescence")).image[..., 0]
    tifffile.imwrite(
        image, grey, ome=True,
        metadata={"axes": "YX", "PhysicalSizeX": 0.4, "PhysicalSizeY": 0.4},
    )  # fmt: skip
    out = tmp_path / "out"
    code, err = predict(
        image, "-o", out, "--model", model, "--device", "cpu", "--format", "tiff,ome-tiff",
        "--measure",
    )  # fmt: skip
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["cells.ome.tif", "cells.tif", MEASURES]
    with tifffile.TiffFile(out / "cells.ome.tif") as tif:
        assert 'PhysicalSizeX="0.4"' in tif.ome_metadata
    labels = tifffile.imread(out / "cells.tif")
    rows = rows_by_image(out / MEASURES)["cells"]
    areas = [0.16 * a for a in nucleus_areas(labels)]
    np.testing.assert_allclose([float(r["area_um2"]) for r in rows], areas, rtol=1e-9)


def test_predict_refuses_an_unknown_format_before_writing(tmp_path, batch):
    root, _, _, model = batch
    before = tree_digest(root)
    out = tmp_path / "out"
    code, err = predict(root, "-o", out, "--model", model, "--format", "tiff,png", "--measure")
    line = refused(code, err, "png")
    assert all(f in line for f in FORMATS)
    assert not out.exists() and tree_digest(root) == before


def test_predict_resume_with_a_table_needs_label_images(tmp_path, batch):
    root, done, ids, model = batch
    out = tmp_path / "out"
    out.mkdir()
    for image_id in ids:  # the ImageJ ROIs of an earlier run, and no label image
        shutil.copy2(done / f"{image_id}.zip", out)
    before = tree_digest(out)
    code, err = predict(
        root, "-o", out, "--model", model, "--format", "roi", "--resume", "--measure"
    )
    line = refused(code, err)
    assert "tiff or ome-tiff" in line
    assert tree_digest(out) == before


def test_measure_never_replaces_its_inputs(tmp_path, measured):
    image, labels, _ = measured
    copy = tmp_path / "image.png"
    shutil.copy(image, copy)
    before = copy.read_bytes(), labels.read_bytes()
    for target in (copy, labels):
        result = nucleiseg("measure", copy, labels, "-o", target, "--overwrite")
        refused(result.returncode, result.stderr, target)
        assert "is an input" in result.stderr
    assert (copy.read_bytes(), labels.read_bytes()) == before


def test_measure_flag_takes_no_input_away(tmp_path, batch):
    """``--measure`` is a flag: an input after it stays an input (it once took it as the
    table's path, and --overwrite then replaced that image with the CSV)."""
    root, _, ids, model = batch
    first, second = (root / i / "images" / f"{i}.png" for i in ids[:2])
    kept = first.read_bytes()
    out = tmp_path / "out"
    code, err = predict("--measure", first, second, "-o", out, "--model", model, "--overwrite")
    assert code == 0, err
    assert first.read_bytes() == kept
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{ids[0]}.tif", f"{ids[1]}.tif", MEASURES]
    )


def test_an_output_named_twice_is_refused_before_anything_is_written(tmp_path, batch):
    root, _, _, model = batch
    out = tmp_path / "out"
    code, err = predict(
        root, "-o", out, "--model", model, "--measure", "--submission", out / MEASURES
    )
    refused(code, err, out / MEASURES)
    assert "written twice" in err and not out.exists()


@pytest.mark.parametrize("size", ["inf", "nan", "0", "-1"])
def test_a_pixel_size_that_is_no_size_is_refused(tmp_path, batch, size):
    root, _, _, model = batch
    out = tmp_path / "out"
    code, err = predict(root, "-o", out, "--model", model, "--pixel-size", size)
    refused(code, err)
    assert "positive and finite" in err and not out.exists()


def test_measure_takes_every_channel_of_a_multichannel_tiff(tmp_path, measured):
    """A (C, Y, X) ImageJ TIFF: the nuclear stain and two markers, each measured."""
    _, labels, sample = measured
    grey = sample.image if sample.image.ndim == 2 else sample.image[..., 0]
    rng = np.random.default_rng(1)
    stack = np.stack([grey, rng.integers(0, 4000, grey.shape), 4000 - grey.astype(int) * 10])
    stack = stack.astype(np.uint16)
    image = tmp_path / "cells.tif"
    tifffile.imwrite(image, stack, imagej=True, metadata={"axes": "CYX"})
    out = tmp_path / "table.csv"
    result = nucleiseg("measure", image, labels, "-o", out)
    assert result.returncode == 0, result.stderr
    header, rows = read_csv(out)
    truth = tifffile.imread(labels)
    for c in range(3):
        assert f"mean_intensity_ch{c}" in header
        for row in rows[:5]:
            pixels = stack[c][truth == int(row["label"])]
            assert float(row[f"mean_intensity_ch{c}"]) == pytest.approx(pixels.mean(), rel=1e-9)
            assert float(row[f"integrated_intensity_ch{c}"]) == pytest.approx(pixels.sum())


def test_a_z_stack_tiff_is_not_measured(tmp_path, measured):
    _, labels, sample = measured
    shape = tifffile.imread(labels).shape
    image = tmp_path / "stack.tif"
    tifffile.imwrite(image, np.zeros((4, *shape), np.uint8), imagej=True, metadata={"axes": "ZYX"})
    result = nucleiseg("measure", image, labels, "-o", tmp_path / "t.csv")
    refused(result.returncode, result.stderr, image)
    assert "axes ZYX" in result.stderr
