"""io/outlines.py and io/formats.py: every file read back by the reader of the tool it is
for (roifile, json + jsonschema + shapely, tifffile, ome-zarr-py) and filled back into
the mask to the pixel, on hard synthetic cases and on the real samples.

The pixel convention under test: pixel (row, col) covers [col, col + 1] x [row, row + 1]
in (x, y), and a pixel is inside an outline exactly when its centre (x + 0.5, y + 0.5) is.
"""

from __future__ import annotations

import json
import os
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import roifile
import shapely
import tifffile
from shapely.geometry import shape as to_shapely
from skimage.draw import polygon2mask

from conftest import small_sample_folders, tree_digest
from napari_nucleiseg.errors import FileProblem, NucleisegError
from napari_nucleiseg.io import read_sample
from napari_nucleiseg.io.formats import FORMATS, output_paths, parse_formats, write_outputs
from napari_nucleiseg.io.outlines import label_outlines, nucleus_outlines
from napari_nucleiseg.io.stage1 import OverlapWarning
from napari_nucleiseg.measure import measure

FOLDERS = small_sample_folders()


def hard_cases() -> dict[str, np.ndarray]:
    """Label images that break outline tracers: holes, islands, corner contacts, borders."""
    cases = {}
    a = np.zeros((11, 11), np.uint16)
    a[1:10, 1:10] = 1
    a[4:7, 4:7] = 0
    cases["hole"] = a
    b = a.copy()
    b[5, 5] = 1  # an island of the same label inside its hole
    cases["island-in-hole"] = b
    c = a.copy()
    c[5, 5] = 2  # another nucleus inside the hole
    cases["nucleus-in-hole"] = c
    d = np.zeros((6, 6), np.uint16)
    d[1:3, 1:3] = 3
    d[3:5, 3:5] = 3  # two parts of one nucleus touching at a corner
    d[1, 4] = 5
    d[2, 5] = 5  # and another pair, one part on the border
    cases["corner-touch"] = d
    e = np.zeros((5, 5), np.uint16)
    e[2, 2] = 7
    cases["one-pixel"] = e
    f = np.zeros((7, 9), np.uint16)
    f[0, 0] = 1
    f[0, 8] = 2
    f[6, 0] = 3
    f[6, 7:] = 4
    f[2:5, 0] = 5
    f[0:3, 3:6] = 6
    f[3:7, 8] = 8
    cases["border"] = f
    cases["whole-image"] = np.full((4, 6), 9, np.uint16)
    g = np.zeros((5, 5), np.uint16)
    g[1:4, 1:4] = 1
    g[2, 2] = 0
    g[1, 3] = 0  # the hole touches the outside at a corner only
    cases["hole-open-at-a-corner"] = g
    h = np.zeros((4, 4), np.uint16)
    h[1:3, 1] = 2
    h[1, 2] = 2
    h[2, 3] = 2  # a hole pixel (2, 2) enclosed on three sides, open at the border corner
    cases["notch"] = h
    checker = (np.indices((8, 8)).sum(axis=0) % 2).astype(np.uint16) * 4
    cases["checkerboard"] = checker  # 32 one-pixel parts touching at corners
    ring = np.zeros((9, 9), np.uint16)
    ring[1:8, 1:8] = 6
    ring[2:7, 2:7] = 0
    ring[3:6, 3:6] = 6
    ring[4, 4] = 0  # a ring, its island, and a hole in that island
    cases["nested"] = ring
    cases["large-label"] = np.pad(np.full((3, 4), 70_000, np.uint32), 2)
    for seed in range(6):
        rng = np.random.default_rng(seed)
        noise = rng.integers(0, 2 + seed, (19, 23)).astype(np.uint16)
        if seed % 2:
            noise[rng.random(noise.shape) < 0.4] = 0
        cases[f"noise-{seed}"] = noise
    return cases


HARD = hard_cases()


def real_labels() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    found = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OverlapWarning)
        for folder in FOLDERS:
            s = read_sample(folder)
            found[folder.name[:8]] = (s.labels, s.image)
    return found


REAL = real_labels()
ALL = {**HARD, **{f"sample-{k}": v[0] for k, v in REAL.items()}}


def fill_rings(rings, shape) -> np.ndarray:
    """Even-odd fill of (x, y) rings at pixel centres, as ImageJ fills a shape ROI."""
    mask = np.zeros(shape, bool)
    for ring in rings:
        ring = np.asarray(ring, dtype=float)
        mask ^= polygon2mask(shape, ring[:, ::-1] - 0.5)  # (row, col) of pixel centres
    return mask


def nonzero_labels(labels: np.ndarray) -> list[int]:
    return [int(v) for v in np.unique(labels) if v]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return (a & b).sum() / (a | b).sum()


def signed_area(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.sum(x[:-1] * y[1:] - x[1:] * y[:-1]))


def check_ring(ring: np.ndarray) -> None:
    """Closed, on pixel corners, axis-parallel steps, no vertex where the path goes straight."""
    assert ring.ndim == 2 and ring.shape[1] == 2 and len(ring) >= 5
    assert np.array_equal(ring[0], ring[-1])
    assert np.array_equal(ring, np.round(ring))
    steps = np.diff(ring, axis=0)
    assert np.all((steps[:, 0] == 0) != (steps[:, 1] == 0))
    turns = (
        steps[:, 0] * np.roll(steps, -1, axis=0)[:, 1] - steps[:, 1] * np.roll(steps, -1, 0)[:, 0]
    )
    assert np.all(turns != 0)


@pytest.mark.parametrize("name", list(ALL))
def test_outlines_fill_back_to_the_mask(name):
    labels = ALL[name]
    found = list(label_outlines(labels))
    assert [label for label, _ in found] == nonzero_labels(labels)
    for label, outlines in found:
        mask = labels == label
        rings = []
        for outline in outlines:
            check_ring(outline.exterior)
            assert signed_area(outline.exterior) < 0  # counter-clockwise on screen (y down)
            rings.append(outline.exterior)
            for hole in outline.holes:
                check_ring(hole)
                assert signed_area(hole) > 0
                rings.append(hole)
        filled = fill_rings(rings, labels.shape)
        assert iou(filled, mask) == 1.0, (name, label)
        areas = [abs(signed_area(o.exterior)) for o in outlines]
        assert areas == sorted(areas, reverse=True)
        # the area inside the rings is the pixel count: edges, not centres
        net = sum(
            abs(signed_area(o.exterior)) - sum(abs(signed_area(h)) for h in o.holes)
            for o in outlines
        )
        assert net == mask.sum()


def test_outline_of_a_part_counts_its_pieces():
    d = HARD["corner-touch"]
    assert len(nucleus_outlines(d == 3)) == 2  # 4-connected parts are outlined apart
    assert len(nucleus_outlines(HARD["checkerboard"] > 0)) == 32
    (ring_part, island) = nucleus_outlines(HARD["nested"] == 6)
    assert len(ring_part.holes) == 1 and len(island.holes) == 1
    (one,) = nucleus_outlines(np.ones((1, 1), bool), offset=(5, 7))
    assert sorted(map(tuple, one.exterior[:-1].tolist())) == [(7, 5), (7, 6), (8, 5), (8, 6)]


# QuPath's GeoJSON import: what its object reader requires of each feature
QUPATH_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["type", "features"],
    "properties": {
        "type": {"const": "FeatureCollection"},
        "features": {"type": "array", "items": {"$ref": "#/$defs/feature"}},
    },
    "$defs": {
        "point": {
            "type": "array",
            "prefixItems": [{"type": "integer"}, {"type": "integer"}],
            "minItems": 2,
            "maxItems": 2,
        },
        "ring": {"type": "array", "minItems": 4, "items": {"$ref": "#/$defs/point"}},
        "polygon": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/ring"}},
        "geometry": {
            "oneOf": [
                {
                    "type": "object",
                    "required": ["type", "coordinates"],
                    "properties": {
                        "type": {"const": "Polygon"},
                        "coordinates": {"$ref": "#/$defs/polygon"},
                    },
                },
                {
                    "type": "object",
                    "required": ["type", "coordinates"],
                    "properties": {
                        "type": {"const": "MultiPolygon"},
                        "coordinates": {
                            "type": "array",
                            "minItems": 1,
                            "items": {"$ref": "#/$defs/polygon"},
                        },
                    },
                },
            ]
        },
        "feature": {
            "type": "object",
            "required": ["type", "geometry", "properties"],
            "properties": {
                "type": {"const": "Feature"},
                "geometry": {"$ref": "#/$defs/geometry"},
                "properties": {
                    "type": "object",
                    "required": ["objectType", "classification", "measurements"],
                    "properties": {
                        "objectType": {"const": "detection"},
                        "classification": {
                            "type": "object",
                            "required": ["name"],
                            "properties": {
                                "name": {"const": "Nucleus"},
                                "color": {
                                    "type": "array",
                                    "minItems": 3,
                                    "maxItems": 3,
                                    "items": {"type": "integer", "minimum": 0, "maximum": 255},
                                },
                            },
                        },
                        "measurements": {
                            "type": "object",
                            "additionalProperties": {"type": "number"},
                        },
                    },
                },
            },
        },
    },
}
VALIDATOR = jsonschema.Draft202012Validator(QUPATH_SCHEMA)


def test_the_schema_is_valid_and_refuses():
    jsonschema.Draft202012Validator.check_schema(QUPATH_SCHEMA)
    ring = [[0, 0], [1, 0], [1, 1], [0, 0]]
    good = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {
                    "objectType": "detection",
                    "classification": {"name": "Nucleus"},
                    "measurements": {"area": 1.5},
                },
            }
        ],
    }
    assert VALIDATOR.is_valid(good)
    for path, value in [
        (("properties", "objectType"), "annotation"),
        (("properties", "classification", "name"), "Cell"),
        (("properties", "measurements"), {"area": "big"}),
        (("geometry", "type"), "LineString"),
        (("geometry", "coordinates"), [[[0.5, 0], [1, 0], [1, 1], [0.5, 0]]]),
    ]:
        bad = json.loads(json.dumps(good))
        target = bad["features"][0]
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        assert not VALIDATOR.is_valid(bad), path


def check_geojson(path: Path, labels: np.ndarray, table: dict | None) -> None:
    doc = json.loads(path.read_text(encoding="utf-8"))
    errors = sorted(VALIDATOR.iter_errors(doc), key=str)
    assert not errors, errors[0]
    present = nonzero_labels(labels)
    assert [f["properties"]["label"] for f in doc["features"]] == present
    rows = {} if table is None else {int(v): i for i, v in enumerate(table["label"])}
    ys, xs = np.indices(labels.shape)
    for feature in doc["features"]:
        label = feature["properties"]["label"]
        geometry = feature["geometry"]
        polygons = (
            [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]
        )
        for polygon in polygons:
            for ring in polygon:
                assert ring[0] == ring[-1]  # closed
                assert all(type(v) is int for point in ring for v in point)
        shape = to_shapely(geometry)
        assert shape.is_valid, (label, shapely.is_valid_reason(shape))
        assert shape.area == (labels == label).sum()
        inside = shapely.contains_xy(shape, xs + 0.5, ys + 0.5)
        assert np.array_equal(inside, labels == label), label
        measurements = feature["properties"]["measurements"]
        if table is None:
            assert measurements == {}
        else:
            expected = {c: float(table[c][rows[label]]) for c in table if c != "label"}
            assert measurements == expected


def check_rois(path: Path, labels: np.ndarray) -> None:
    rois = roifile.roiread(path)
    rois = rois if isinstance(rois, list) else [rois]
    present = nonzero_labels(labels)
    assert [r.name for r in rois] == [f"{v:04d}" for v in present]
    for roi, label in zip(rois, present):
        mask = labels == label
        rings = roi.coordinates(multi=True)
        if len(rings) == 1:
            assert roi.roitype == roifile.ROI_TYPE.TRACED and not roi.composite
        else:
            assert roi.composite
        assert np.array_equal(fill_rings(rings, labels.shape), mask), label
        rows, cols = np.nonzero(mask)
        # the coordinates are stored relative to (left, top): that corner must be exact
        assert (roi.left, roi.top) == (cols.min(), rows.min())
        assert roi.right >= cols.max() + 1 and roi.bottom >= rows.max() + 1


def check_ome_tiff(path: Path, labels: np.ndarray, pixel_size) -> None:
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome
        stored = tif.asarray()
        xml = tif.ome_metadata
    assert stored.dtype == (np.uint16 if labels.max() <= 65535 else np.uint32)
    assert np.array_equal(stored, labels)
    pixels = next(e for e in ET.fromstring(xml).iter() if e.tag.endswith("}Pixels"))
    if pixel_size is None:
        assert pixels.get("PhysicalSizeX") is None and pixels.get("PhysicalSizeY") is None
    else:
        assert float(pixels.get("PhysicalSizeY")) == pixel_size[0]
        assert float(pixels.get("PhysicalSizeX")) == pixel_size[1]
        assert pixels.get("PhysicalSizeXUnit") == pixels.get("PhysicalSizeYUnit") == "µm"


def ome_zarr_nodes(path: Path) -> dict:
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    location = parse_url(str(path))
    assert location is not None, path
    nodes = {}
    for node in Reader(location)():
        nodes[node.metadata.get("name")] = node
    return nodes


def scales(node) -> list[list[float]]:
    return [
        next(t["scale"] for t in level if t["type"] == "scale")
        for level in node.metadata["coordinateTransformations"]
    ]


def check_ome_zarr(path: Path, labels: np.ndarray, image, pixel_size) -> None:
    nodes = ome_zarr_nodes(path)
    nuclei = nodes["nuclei"]
    levels = [np.asarray(level) for level in nuclei.data]
    assert np.array_equal(levels[0], labels)
    present = set(np.unique(labels).tolist())
    for level in levels[1:]:  # a label pyramid holds labels, never their averages
        assert set(np.unique(level).tolist()) <= present
    size = (1.0, 1.0) if pixel_size is None else pixel_size
    assert scales(nuclei)[0] == list(size)
    base = nodes["image"]
    data = np.asarray(base.data[0])
    if image is None:
        assert np.array_equal(data, labels)
        assert scales(base)[0] == list(size)
    elif image.ndim == 3:
        assert np.array_equal(data, np.moveaxis(image[..., :3], -1, 0))
        assert scales(base)[0] == [1.0, *size]
    else:
        assert np.array_equal(data, image)
    if pixel_size is not None:
        units = {a["name"]: a.get("unit") for a in nuclei.metadata["axes"]}
        assert units == {"y": "micrometer", "x": "micrometer"}


def write_all(folder: Path, labels, image=None, pixel_size=None, table=None) -> dict:
    paths = output_paths(folder, "x", FORMATS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ome-zarr-py's own deprecations
        write_outputs(paths, labels, image=image, pixel_size=pixel_size, table=table)
    return paths


@pytest.mark.parametrize("name", list(HARD))
def test_every_format_on_hard_cases(tmp_path, name):
    labels = HARD[name]
    paths = write_all(tmp_path, labels)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths.values())
    assert np.array_equal(tifffile.imread(paths["tiff"]), labels)
    check_rois(paths["roi"], labels)
    check_geojson(paths["geojson"], labels, None)
    check_ome_tiff(paths["ome-tiff"], labels, None)
    check_ome_zarr(paths["ome-zarr"], labels, None, None)


@pytest.mark.parametrize("name", list(REAL))
def test_every_format_on_real_samples(tmp_path, name):
    labels, image = REAL[name]
    table = measure(labels, image, 0.5)
    paths = write_all(tmp_path, labels, image=image, pixel_size=(0.5, 0.5), table=table)
    assert np.array_equal(tifffile.imread(paths["tiff"]), labels)
    check_rois(paths["roi"], labels)
    check_geojson(paths["geojson"], labels, table)
    check_ome_tiff(paths["ome-tiff"], labels, (0.5, 0.5))
    check_ome_zarr(paths["ome-zarr"], labels, image, (0.5, 0.5))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_ome_zarr_pyramid_and_grey_image(tmp_path):
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 40, (520, 600)).astype(np.uint16)
    grey = rng.integers(0, 4000, (520, 600)).astype(np.uint16)
    paths = output_paths(tmp_path, "x", ["ome-zarr"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_outputs(paths, labels, image=grey, pixel_size=(0.25, 0.25))
    nuclei = ome_zarr_nodes(paths["ome-zarr"])["nuclei"]
    assert len(nuclei.data) == 2  # 520 px: one level at half size
    assert [list(s) for s in scales(nuclei)] == [[0.25, 0.25], [0.5, 0.5]]
    check_ome_zarr(paths["ome-zarr"], labels, grey, (0.25, 0.25))


def test_geojson_leaves_out_what_json_cannot_hold(tmp_path):
    labels = HARD["border"]
    table = measure(labels)
    table["solidity"] = table["solidity"].copy()
    table["solidity"][0] = np.nan
    paths = write_all(tmp_path, labels, table=table)
    text = paths["geojson"].read_text(encoding="utf-8")
    assert "NaN" not in text and "Infinity" not in text
    first = json.loads(text)["features"][0]["properties"]["measurements"]
    assert "solidity" not in first and first["area_px2"] == 1.0


def test_parse_formats():
    assert parse_formats("tiff") == ("tiff",)
    assert parse_formats("roi,tiff") == ("roi", "tiff")
    assert parse_formats(" ROI , geojson,roi,") == ("roi", "geojson")
    assert parse_formats(["ome-tiff", "ome-zarr"]) == ("ome-tiff", "ome-zarr")
    assert parse_formats(",".join(FORMATS)) == FORMATS
    for bad, shown in [
        ("png", "png"),
        ("tiff,png,jpeg", "png, jpeg"),
        ("", "(none)"),
        (",", "(none)"),
    ]:
        with pytest.raises(NucleisegError) as info:
            parse_formats(bad)
        message = str(info.value)
        assert "\n" not in message and shown in message
        assert all(f in message for f in FORMATS)


def test_ome_zarr_without_its_extra(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "ome_zarr", None)
    with pytest.raises(NucleisegError, match=r"napari-nucleiseg\[ome-zarr\]"):
        parse_formats("tiff,ome-zarr")
    assert parse_formats("tiff,roi") == ("tiff", "roi")


def can_write(folder: Path) -> bool:
    probe = folder / "probe"
    try:
        probe.write_bytes(b"")
    except OSError:
        return False
    probe.unlink()
    return True


@pytest.mark.parametrize("fmt", FORMATS)
def test_read_only_folder(tmp_path, fmt):
    folder = tmp_path / "locked"
    folder.mkdir()
    (folder / "keep.txt").write_text("x")
    folder.chmod(0o555)
    try:
        if can_write(folder):
            pytest.skip("chmod does not stop this user (root) from writing")
        path = output_paths(folder, "x", [fmt])[fmt]
        with pytest.raises(FileProblem) as info:
            write_all_one(path, fmt)
        assert str(path) in str(info.value) or str(folder) in str(info.value)
        assert sorted(os.listdir(folder)) == ["keep.txt"]
    finally:
        folder.chmod(0o755)


def write_all_one(path: Path, fmt: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_outputs({fmt: path}, HARD["hole"], pixel_size=(0.5, 0.5))


@pytest.mark.parametrize("fmt", FORMATS)
def test_folder_that_is_a_file(tmp_path, fmt):
    """A write that fails for every user, root included: the FileProblem names the file
    and nothing is left beside it."""
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    path = output_paths(blocker, "x", [fmt])[fmt]
    with pytest.raises(FileProblem) as info:
        write_all_one(path, fmt)
    assert str(blocker) in str(info.value) and "\n" not in str(info.value)
    assert sorted(os.listdir(tmp_path)) == ["blocker"]
    assert blocker.read_text() == "not a folder"


def test_ome_zarr_failing_midway_keeps_the_old_one(tmp_path, monkeypatch):
    import ome_zarr.writer

    old = HARD["nested"]
    paths = write_all(tmp_path, old)
    before = tree_digest(tmp_path)

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ome_zarr.writer, "write_labels", fail)
    with pytest.raises(FileProblem, match="No space left") as info:
        write_outputs({"ome-zarr": paths["ome-zarr"]}, HARD["hole"])
    assert str(paths["ome-zarr"]) in str(info.value)
    assert tree_digest(tmp_path) == before
    check_ome_zarr(paths["ome-zarr"], old, None, None)


def test_existing_outputs_are_replaced_whole(tmp_path):
    big = np.zeros((600, 640), np.uint16)  # a pyramid, many nuclei
    for i in range(40):
        top, left = divmod(i, 8)
        big[top * 100 + 10 : top * 100 + 40, left * 70 + 5 : left * 70 + 50] = i + 1
    write_all(tmp_path, big, pixel_size=(0.5, 0.5), table=measure(big))
    small = HARD["island-in-hole"]
    paths = write_all(tmp_path, small)
    assert sorted(os.listdir(tmp_path)) == sorted(p.name for p in paths.values())
    assert np.array_equal(tifffile.imread(paths["tiff"]), small)
    check_rois(paths["roi"], small)
    check_geojson(paths["geojson"], small, None)
    check_ome_tiff(paths["ome-tiff"], small, None)
    check_ome_zarr(paths["ome-zarr"], small, None, None)
    zarr = paths["ome-zarr"]
    assert not (zarr / "s1").exists() and not (zarr / "labels" / "nuclei" / "s1").exists()
    assert len(ome_zarr_nodes(zarr)["nuclei"].data) == 1
    leftovers = [p for p in tmp_path.rglob(".*") if "partial" in p.name or "old" in p.name]
    assert not leftovers
