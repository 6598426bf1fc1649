"""Exports into one root from concurrent processes, and from a killed one: nothing is lost.

Every case runs real ``nucleiseg export`` processes (not threads), started
together; see docs/reliability.md for the guarantees these tests show.
``python benchmarks/bench_export.py --race 20`` repeats the 20-way races and counts.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import tree_digest
from napari_nucleiseg import edit
from napari_nucleiseg.io import export as ex
from napari_nucleiseg.io import read_sample
from napari_nucleiseg.io.images import write_label_tiff
from napari_nucleiseg.io.manifest import MANIFEST, read_manifest, set_split
from napari_nucleiseg.samples import sample_folder

CLI = [sys.executable, "-m", "napari_nucleiseg.cli", "export"]
RACERS = 4


@pytest.fixture(scope="module")
def fluo():
    return read_sample(sample_folder("fluorescence"))


@pytest.fixture(scope="module")
def inputs(fluo, tmp_path_factory) -> tuple[Path, list[Path]]:
    """The image as a PNG, and its labels as TIFFs with 0, 1, 2, ... nuclei deleted."""
    folder = tmp_path_factory.mktemp("inputs")
    image = folder / "image.png"
    image.write_bytes((fluo.path / "images" / f"{fluo.id}.png").read_bytes())
    ids = np.unique(fluo.labels)[1:]
    labels = [
        write_label_tiff(folder / f"labels{k}.tif", edit.delete_labels(fluo.labels, ids[:k]))
        for k in range(RACERS)
    ]
    return image, labels


def race(*argvs) -> list[tuple[int, str]]:
    """Start one export process per argv, every one before waiting for any: (status, stderr)."""
    procs = [
        subprocess.Popen([*CLI, *map(str, a)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for a in argvs
    ]
    return [(p.wait(timeout=120), p.stderr.read().decode()) for p in procs]


def samples_in(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def assert_consistent(root: Path, n_nuclei: int | None = None) -> dict[str, dict]:
    """Every sample folder is complete and has its manifest entry, and nothing else is left."""
    manifest = read_manifest(root)
    assert sorted(manifest) == samples_in(root)
    for sample_id, entry in manifest.items():
        assert (root / sample_id / "images" / f"{sample_id}.png").is_file()
        masks = len(list((root / sample_id / "masks").iterdir()))
        assert masks == entry["nuclei"] == (n_nuclei or masks)
    assert not list(root.glob(".export-*"))
    return manifest


@pytest.mark.parametrize("n", [2, 5, 20])
def test_concurrent_exports_of_different_ids_keep_everything(n, inputs, fluo, tmp_path):
    image, labels = inputs
    results = race(*([image, labels[0], "-o", tmp_path, "--id", f"s{i}"] for i in range(n)))
    assert [code for code, _ in results] == [0] * n, results
    manifest = assert_consistent(tmp_path, len(fluo.mask_names))
    assert sorted(manifest) == sorted(f"s{i}" for i in range(n))


def test_concurrent_exports_of_one_id_one_wins(inputs, tmp_path):
    image, labels = inputs
    results = race(*([image, lab, "-o", tmp_path, "--id", "same"] for lab in labels))
    codes = sorted(code for code, _ in results)
    assert codes == [0] + [1] * (RACERS - 1), results
    for code, err in results:
        if code == 1:
            assert err.count("\n") == 1 and str(tmp_path / "same") in err
            assert "already exists" in err
    assert list(assert_consistent(tmp_path)) == ["same"]


def test_concurrent_new_versions_get_an_id_each(inputs, fluo, tmp_path):
    image, labels = inputs
    results = race(*([image, labels[0], "-o", tmp_path, "--id", "v", "--new-version"],) * RACERS)
    assert [code for code, _ in results] == [0] * RACERS, results
    manifest = assert_consistent(tmp_path, len(fluo.mask_names))
    assert sorted(manifest) == ["v"] + [f"v_v{i}" for i in range(2, RACERS + 1)]


def test_concurrent_overwrites_leave_one_whole_version(inputs, fluo, tmp_path):
    image, labels = inputs
    results = race(*([image, lab, "-o", tmp_path, "--id", "o", "--overwrite"] for lab in labels))
    assert [code for code, _ in results] == [0] * RACERS, results
    entry = assert_consistent(tmp_path)["o"]  # the version on disk is the one in the manifest
    assert entry["nuclei"] in {len(fluo.mask_names) - k for k in range(RACERS)}


def big_inputs(fluo, folder: Path) -> tuple[Path, Path]:
    """The sample tiled 4 x 4 (1024 x 1024, ~900 nuclei): an export of a few seconds."""
    step = int(fluo.labels.max())
    labels = np.block(
        [
            [np.where(fluo.labels > 0, fluo.labels + (4 * i + j) * step, 0) for j in range(4)]
            for i in range(4)
        ]
    )
    image = folder / "big.png"
    Image.fromarray(np.tile(fluo.image, (4, 4, 1))).save(image)
    return image, write_label_tiff(folder / "big.tif", labels)


def wait_for(condition, what: str, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.005)


def test_killed_export_is_cleaned_up_by_the_next(fluo, tmp_path):
    root = tmp_path / "root"
    for sample_id in ("a", "b"):
        ex.export_sample(root, sample_id, fluo.image, fluo.labels)
    before = {p.name: tree_digest(p) for p in root.iterdir() if p.is_dir()}
    entries = read_manifest(root)
    killed = subprocess.Popen([*CLI, *big_inputs(fluo, tmp_path), "-o", root, "--id", "big"])
    try:
        wait_for(lambda: list(root.glob(".export-big-*")), "the export's temporary folder")
        # an export meanwhile leaves the live export's folder alone
        ex.export_sample(root, "during", fluo.image, fluo.labels)
        assert killed.poll() is None, "the big export ended before it could be killed"
        killed.kill()  # SIGKILL: no clean-up runs
    finally:
        killed.wait()
    assert [p.name for p in root.glob(".export-*")] and not (root / "big").exists()
    ex.export_sample(root, "after", fluo.image, fluo.labels)
    manifest = assert_consistent(root, len(fluo.mask_names))  # no .export-* left
    assert sorted(manifest) == ["a", "after", "b", "during"]
    assert {k: manifest[k] for k in entries} == entries
    assert {k: tree_digest(root / k) for k in before} == before


def test_lock_is_freed_when_its_holder_is_killed(fluo, tmp_path):
    ex.export_sample(tmp_path, "a", fluo.image, fluo.labels)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from napari_nucleiseg.io.lock import root_lock\n"
            "with root_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(120)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "held\n"
        # set_split waits for the lock like an export does
        splitter = threading.Thread(target=set_split, args=(tmp_path, "a", "validation"))
        splitter.start()
        splitter.join(0.3)
        assert splitter.is_alive()
        holder.kill()
    finally:
        holder.wait()
    splitter.join(30)
    assert not splitter.is_alive()
    assert json.loads((tmp_path / MANIFEST).read_text())["samples"]["a"]["split"] == "validation"
    ex.export_sample(tmp_path, "b", fluo.image, fluo.labels)
    assert sorted(assert_consistent(tmp_path)) == ["a", "b"]
