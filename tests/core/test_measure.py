"""measure.py against brute-force numpy on the real samples: every column, both units.

The reference figures are computed here from the pixels alone, with the
definitions scikit-image documents for ``regionprops`` (checked against its
source): the centroid is the mean pixel index, the axis lengths are
``4 * sqrt(eigenvalue)`` of the biased covariance of the pixel coordinates
(its ``inertia_tensor``, central moments over the pixel count), the solidity is
the pixel count over that of ``skimage.morphology.convex_hull_image`` of the
nucleus's bounding box (skimage's own convex hull: the one figure not derived
from scratch here), and the perimeter is ``skimage.measure.perimeter`` with 4-
neighbourhood, scaled by the pixel size.
"""

from __future__ import annotations

import csv
import math
import warnings

import numpy as np
import pytest
from skimage.measure import perimeter
from skimage.morphology import convex_hull_image

from conftest import small_sample_folders
from napari_nucleiseg.io import read_sample
from napari_nucleiseg.io.images import read_image_file
from napari_nucleiseg.io.stage1 import OverlapWarning, image_path
from napari_nucleiseg.measure import features, measure, pixel_spacing, table_csv, write_table

SHAPE = [
    "centroid_y_{u}",
    "centroid_x_{u}",
    "area_{u}2",
    "perimeter_{u}",
    "equivalent_diameter_{u}",
    "major_axis_length_{u}",
    "minor_axis_length_{u}",
    "eccentricity",
    "solidity",
]
INTENSITY = ["mean_intensity", "max_intensity", "integrated_intensity"]
FOLDERS = small_sample_folders()


def columns(unit: str, n_channels: int) -> list[str]:
    """The expected column names, in order."""
    names = ["label", *(c.format(u=unit) for c in SHAPE)]
    if n_channels == 1:
        return names + INTENSITY
    return names + [f"{c}_ch{k}" for k in range(n_channels) for c in INTENSITY]


def sample(folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OverlapWarning)
        return read_sample(folder)


def is_grey(image: np.ndarray) -> bool:
    return image.ndim == 2 or all(
        np.array_equal(image[..., 0], image[..., c]) for c in range(1, image.shape[-1])
    )


def brute_force(labels: np.ndarray, image: np.ndarray, size: float) -> dict[str, list]:
    """Every column, nucleus by nucleus, from the pixel coordinates and values alone."""
    planes = [image[..., 0]] if is_grey(image) else [image[..., c] for c in range(3)]
    unit = "px" if size == 1 else "um"
    out: dict[str, list] = {name: [] for name in columns(unit, len(planes))}
    for label in np.unique(labels)[1:]:
        mask = labels == label
        rows, cols = np.nonzero(mask)
        n = rows.size
        coords = np.stack([rows, cols]).astype(float) * size
        centre = coords.mean(axis=1)
        big, small = np.clip(np.linalg.eigvalsh(np.cov(coords, bias=True))[::-1], 0, None)
        major, minor = 4 * math.sqrt(big), 4 * math.sqrt(small)
        box = mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        area = n * size**2
        figures = [
            centre[0],
            centre[1],
            area,
            perimeter(mask, 4) * size,
            math.sqrt(4 * area / math.pi),
            major,
            minor,
            math.sqrt(1 - (minor / major) ** 2) if major > 0 else 0.0,
            n / convex_hull_image(box).sum(),
        ]
        out["label"].append(int(label))
        for name, value in zip(SHAPE, figures):
            out[name.format(u=unit)].append(value)
        for k, plane in enumerate(planes):
            values = plane[mask].astype(np.float64)
            suffix = "" if len(planes) == 1 else f"_ch{k}"
            out[f"mean_intensity{suffix}"].append(values.mean())
            out[f"max_intensity{suffix}"].append(values.max())
            out[f"integrated_intensity{suffix}"].append(values.sum())
    return out


@pytest.mark.parametrize("folder", FOLDERS, ids=[f.name[:8] for f in FOLDERS])
def test_every_column_equals_brute_force(folder):
    s = sample(folder)
    assert s.labels.max() > 0
    for size, pixel_size in [(1, None), (0.5, 0.5)]:
        table = measure(s.labels, s.image, pixel_size)
        expected = brute_force(s.labels, s.image, size)
        assert list(table) == list(expected)
        assert all(len(v) == len(expected["label"]) for v in table.values())
        np.testing.assert_array_equal(table["label"], expected["label"])
        for name, column in expected.items():
            np.testing.assert_allclose(table[name], column, rtol=0, atol=1e-6, err_msg=name)


def test_the_samples_cover_grey_and_colour():
    kinds = {is_grey(sample(f).image) for f in FOLDERS}
    assert kinds == {True, False}  # grey stored as RGB (one channel) and H&E (three)


@pytest.mark.parametrize("folder", FOLDERS, ids=[f.name[:8] for f in FOLDERS])
def test_micrometres_scale_pixels(folder):
    s = sample(folder)
    px, um = measure(s.labels, s.image), measure(s.labels, s.image, (0.5, 0.5))
    assert [n for n in px if n.endswith(("_px", "_px2"))] == [c.format(u="px") for c in SHAPE[:7]]
    assert not any(n.endswith(("_um", "_um2")) for n in px)
    for name in SHAPE:
        power = 2 if name.endswith("2") else 0 if "{u}" not in name else 1
        np.testing.assert_allclose(
            um[name.format(u="um")], px[name.format(u="px")] * 0.5**power, rtol=1e-12
        )
    np.testing.assert_allclose(um["perimeter_um"], px["perimeter_px"] * 0.5, rtol=1e-12)
    for name in px:
        if not name.startswith(tuple(c.split("_{")[0] for c in SHAPE)):
            np.testing.assert_array_equal(um[name], px[name])  # intensities have no unit


def test_rgba_alpha_is_left_out():
    """The stage-1 PNGs as stored (RGBA): the alpha changes nothing."""
    for folder in FOLDERS:
        s = sample(folder)
        stored = read_image_file(image_path(folder))
        assert stored.ndim == 3
        with_alpha = np.dstack([s.image, np.full(s.image.shape[:2], 255, s.image.dtype)])
        varying = with_alpha.copy()
        varying[..., 3] = np.arange(varying[..., 3].size).reshape(varying.shape[:2]) % 256
        reference = measure(s.labels, s.image)
        for image in [stored, with_alpha, varying]:
            table = measure(s.labels, image)
            assert list(table) == list(reference)
            for name in table:
                np.testing.assert_array_equal(table[name], reference[name])


def test_channel_names():
    rng = np.random.default_rng(0)
    labels = np.zeros((20, 30), np.uint16)
    labels[2:9, 3:12], labels[12:18, 15:28] = 4, 9
    grey = rng.integers(0, 4000, (20, 30)).astype(np.uint16)
    colour = rng.integers(0, 256, (20, 30, 3)).astype(np.uint8)
    assert list(measure(labels, grey)) == columns("px", 1)
    assert list(measure(labels, np.dstack([grey] * 3))) == columns("px", 1)
    assert list(measure(labels, grey[..., None])) == columns("px", 1)
    assert list(measure(labels, colour)) == columns("px", 3)
    assert list(measure(labels)) == columns("px", 1)[: 1 + len(SHAPE)]
    two = measure(labels, np.dstack([grey, grey // 2]))
    assert list(two) == columns("px", 2)
    half = grey // 2
    expected = [half[labels == v].astype(float).mean() for v in (4, 9)]
    np.testing.assert_allclose(two["mean_intensity_ch1"], expected, rtol=0, atol=1e-9)


def test_pixel_size_checks():
    labels = np.zeros((8, 8), np.uint8)
    labels[2:5, 2:5] = 1
    assert pixel_spacing(None) is None
    assert pixel_spacing(0.5) == (0.5, 0.5)
    assert pixel_spacing((0.25, 0.25)) == (0.25, 0.25)
    for bad in [0, -1, float("nan"), float("inf"), (0.5, 0)]:
        with pytest.raises(ValueError, match="positive"):
            measure(labels, pixel_size=bad)
    with pytest.raises(ValueError, match="not square"):
        measure(labels, pixel_size=(0.5, 0.6))
    same = measure(labels, pixel_size=(0.5, 0.5))
    assert same["area_um2"].tolist() == measure(labels, pixel_size=0.5)["area_um2"].tolist()


def test_input_checks():
    labels = np.zeros((8, 9), np.uint16)
    labels[1:4, 1:4] = 1
    for image in [np.zeros((8, 10)), np.zeros((9, 9, 3)), np.zeros((9, 8))]:
        with pytest.raises(ValueError, match="not one scene"):
            measure(labels, image)
    for bad in [labels.astype(float), labels[None], labels.astype(bool)]:
        with pytest.raises(ValueError, match="2-D integer"):
            measure(bad)


@pytest.mark.parametrize("channels", [0, 1, 3])
def test_empty_label_image_has_every_column(channels):
    rng = np.random.default_rng(1)
    shape = (16, 16) if channels < 3 else (16, 16, 3)
    image = None if channels == 0 else rng.integers(0, 256, shape).astype(np.uint8)
    full = np.zeros((16, 16), np.uint16)
    full[3:8, 4:9] = 2
    for size in [None, 0.5]:
        empty = measure(np.zeros((16, 16), np.uint16), image, size)
        assert list(empty) == list(measure(full, image, size))
        assert all(len(v) == 0 for v in empty.values())
        text = table_csv([(None, empty)])
        assert text.splitlines() == [",".join(empty)]


def test_features_put_label_i_in_row_i():
    s = sample(FOLDERS[0])
    gappy = (s.labels.astype(np.int64) * 3).astype(np.uint16)  # labels 3, 6, 9 ...
    table = measure(gappy, s.image)
    rows = features(table)
    top = int(gappy.max())
    assert rows["label"].tolist() == list(range(top + 1))
    assert list(rows) == list(table)
    present = set(table["label"].tolist())
    for name in table:
        if name == "label":
            continue
        for i, value in enumerate(table[name]):
            assert rows[name][table["label"][i]] == value
        absent = [i for i in range(top + 1) if i not in present]
        assert np.isnan(rows[name][absent]).all()
    assert len(features(table, n_labels=top + 10)["area_px2"]) == top + 11
    assert len(features(table, n_labels=2)["area_px2"]) == top + 1
    empty = features(measure(np.zeros((4, 4), np.uint8)))
    assert empty["label"].tolist() == [0] and np.isnan(empty["area_px2"]).all()


def read_csv(path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def test_write_table_parses_back_to_the_same_floats(tmp_path):
    for folder in FOLDERS:
        s = sample(folder)
        table = measure(s.labels, s.image, 0.3)  # 0.3: floats with every digit used
        path = write_table(tmp_path / "t.csv", table)
        header, *rows = read_csv(path)
        assert header == list(table)
        assert len(rows) == len(table["label"])
        for i, row in enumerate(rows):
            assert int(row[0]) == table["label"][i]
            assert [float(v) for v in row[1:]] == [float(table[c][i]) for c in header[1:]]
        assert not list(tmp_path.glob(".*partial"))


def test_batch_table_has_an_image_column_first(tmp_path):
    grey = [f for f in FOLDERS if is_grey(sample(f).image)]
    tables = [(f.name, measure(sample(f).labels, sample(f).image)) for f in grey]
    path = write_table(tmp_path / "batch.csv", tables)
    header, *rows = read_csv(path)
    assert header == ["image", *tables[0][1]]
    expected = [(name, label) for name, t in tables for label in t["label"].tolist()]
    assert [(r[0], int(r[1])) for r in rows] == expected
    for name, table in tables:
        mine = [r for r in rows if r[0] == name]
        for c, column in enumerate(header[2:], start=2):
            assert [float(r[c]) for r in mine] == table[column].tolist()


def test_batch_table_of_grey_and_colour_images(tmp_path):
    """A batch mixing grey (one intensity channel) and colour (three): every row has as
    many cells as the header, and the columns all tables share hold their values."""
    tables = [(f.name, measure(sample(f).labels, sample(f).image)) for f in FOLDERS]
    assert len({len(t) for _, t in tables}) == 2  # one channel and three
    path = write_table(tmp_path / "batch.csv", tables)
    header, *rows = read_csv(path)
    assert header[0] == "image"
    assert {len(r) for r in rows} == {len(header)}, (header, sorted({len(r) for r in rows}))
    shared = set.intersection(*(set(t) for _, t in tables))
    for name, table in tables:
        mine = [dict(zip(header, r)) for r in rows if r[0] == name]
        for column in shared:
            assert [float(r[column]) for r in mine] == table[column].tolist(), (name, column)
