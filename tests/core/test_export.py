"""Export as training data: round trips on real samples, names, manifest, safety, TIFFs, CLI."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from conftest import small_sample_folders, tree_digest
from napari_nucleiseg import cli, edit
from napari_nucleiseg.errors import FileProblem
from napari_nucleiseg.io import export as ex
from napari_nucleiseg.io import list_samples, read_label_image, read_sample
from napari_nucleiseg.io.images import write_label_tiff
from napari_nucleiseg.io.lock import LOCK_FILE
from napari_nucleiseg.io.manifest import MANIFEST, read_manifest, set_split
from napari_nucleiseg.io.stage1 import OverlapWarning
from napari_nucleiseg.io.tiff_layout import export_tiff_layout, iter_export_tiff_layout
from napari_nucleiseg.samples import sample_folder

HEX_NAME = r"^[0-9a-f]{64}\.png$"


def quiet_read(folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OverlapWarning)
        return read_sample(folder)


def same_up_to_renumbering(a: np.ndarray, b: np.ndarray) -> bool:
    """True when a and b partition the pixels into the same nuclei."""
    if a.shape != b.shape or not np.array_equal(a == 0, b == 0):
        return False
    changes = edit.compare_labels(a, b)
    return changes.total == 0


def assert_round_trip(folder: Path, root: Path) -> None:
    sample = quiet_read(folder)
    result = ex.export_sample(
        root,
        sample.id,
        sample.image,
        sample.labels,
        original=sample.labels,
        mask_names=sample.mask_names,
        source=sample.path,
    )
    back = read_sample(result.path)
    assert back.id == sample.id
    assert back.image.dtype == np.uint8 and np.array_equal(back.image, sample.image)
    assert np.array_equal(back.labels, sample.labels)  # same names -> same numbering
    assert back.mask_names == sample.mask_names
    assert result.changes == edit.LabelChanges(0, 0, 0, len(sample.mask_names))
    for p in (result.path / "masks").iterdir():  # single-channel 0/255
        with Image.open(p) as im:
            assert im.mode == "L"
            assert set(np.unique(np.asarray(im)).tolist()) == {0, 255}


@pytest.mark.parametrize("folder", small_sample_folders(), ids=lambda p: p.name[:8])
def test_round_trip_small_samples(folder, tmp_path):
    before = tree_digest(folder)
    assert_round_trip(folder, tmp_path / "curated")
    assert tree_digest(folder) == before  # the source is never written


def test_round_trip_20_shared_samples(shared_data, tmp_path):
    folders = list_samples(shared_data / "stage1_train")[:20]
    for folder in folders:
        assert_round_trip(folder, tmp_path / "curated")
    manifest = read_manifest(tmp_path / "curated")
    assert sorted(manifest) == sorted(f.name for f in folders)


@pytest.fixture(scope="module")
def fluo():
    return read_sample(sample_folder("fluorescence"))


def corrected(labels: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
    """Delete one nucleus, merge two, split one, paint a new one."""
    ids = [int(i) for i in np.unique(labels)[1:]]
    sizes = np.bincount(labels.ravel())
    big = int(np.argmax(sizes[1:]) + 1)
    out = edit.delete_labels(labels, ids[0])
    out = edit.merge_labels(out, [ids[1], ids[2]])
    rows, cols = np.nonzero(out == big)
    r = int(round(rows.mean()))
    out = edit.split_label_along_line(out, [(r, cols.min() - 2), (r, cols.max() + 2)])
    free = edit.next_free_label(out)
    empty = np.argwhere(np.pad(out == 0, 0))
    # a 4x4 nucleus on background far from others
    for r0, c0 in empty[:: max(len(empty) // 500, 1)]:
        window = out[r0 : r0 + 6, c0 : c0 + 6]
        if window.shape == (6, 6) and not window.any():
            out[r0 + 1 : r0 + 5, c0 + 1 : c0 + 5] = free
            break
    return out, {"removed": 2, "changed": 2, "added": 2}


def test_changes_are_counted_and_names_kept(fluo, tmp_path):
    labels, expected = corrected(fluo.labels)
    changes = edit.compare_labels(labels, fluo.labels)
    assert {"removed": changes.removed, "changed": changes.changed, "added": changes.added} == (
        expected
    )
    n = len(fluo.mask_names)
    assert changes.unchanged == n - 4  # deleted 1, merged 2, split 1
    result = ex.export_sample(
        tmp_path,
        fluo.id,
        fluo.image,
        labels,
        original=fluo.labels,
        mask_names=fluo.mask_names,
        model="unet-test",
        split="validation",
    )
    back = read_sample(result.path)
    assert same_up_to_renumbering(back.labels, labels)
    kept = set(back.mask_names.values()) & set(fluo.mask_names.values())
    assert len(kept) == changes.unchanged
    new_names = set(back.mask_names.values()) - kept
    assert len(new_names) == changes.changed + changes.added
    for label, name in back.mask_names.items():
        if name in new_names:  # the SHA-256 of the mask as written
            assert name == ex.mask_name(back.labels == label)
            assert len(name) == 68 and name.endswith(".png")
    entry = json.loads((tmp_path / MANIFEST).read_text())["samples"][fluo.id]
    assert entry["model"] == "unet-test" and entry["split"] == "validation"
    assert (entry["added"], entry["removed"], entry["changed"]) == (2, 2, 2)
    assert entry["nuclei"] == len(back.mask_names) and entry["exported"]


def test_renumbering_changes_nothing(fluo):
    perm = np.random.default_rng(0).permutation(int(fluo.labels.max())) + 1
    relabelled = np.concatenate([[0], perm]).astype(fluo.labels.dtype)[fluo.labels]
    changes = edit.compare_labels(relabelled, fluo.labels)
    assert changes.total == 0 and changes.unchanged == len(fluo.mask_names)
    names, _ = ex.mask_file_names(relabelled, fluo.labels, fluo.mask_names)
    assert sorted(names.values()) == sorted(fluo.mask_names.values())
    assert edit.compare_labels(fluo.labels, None).added == len(fluo.mask_names)


def test_changes_with_sparse_huge_labels(fluo):
    big = fluo.labels.astype(np.uint32) * 60_000_000 // 2  # labels up to ~1.7e9
    changes = edit.compare_labels(big, fluo.labels)
    assert changes.total == 0 and changes.unchanged == len(fluo.mask_names)
    assert set(changes.same) == set(np.unique(big).tolist()) - {0}
    names, _ = ex.mask_file_names(big, fluo.labels, fluo.mask_names)
    assert sorted(names.values()) == sorted(fluo.mask_names.values())


def test_existing_id_refused_and_nothing_changes(fluo, tmp_path):
    ex.export_sample(tmp_path, fluo.id, fluo.image, fluo.labels)
    before = tree_digest(tmp_path)
    with pytest.raises(ex.SampleExists, match="already exists.*_v2"):
        ex.export_sample(tmp_path, fluo.id, fluo.image, edit.delete_labels(fluo.labels, 1))
    assert tree_digest(tmp_path) == before


def test_overwrite_and_new_version(fluo, tmp_path):
    ex.export_sample(tmp_path, fluo.id, fluo.image, fluo.labels)
    fewer = edit.delete_labels(fluo.labels, [1, 2])
    result = ex.export_sample(tmp_path, fluo.id, fluo.image, fewer, if_exists="overwrite")
    assert result.id == fluo.id
    assert len(list((tmp_path / fluo.id / "masks").iterdir())) == len(fluo.mask_names) - 2
    assert ex.next_version_id(tmp_path, fluo.id) == f"{fluo.id}_v2"
    v2 = ex.export_sample(tmp_path, fluo.id, fluo.image, fewer, if_exists="new-version")
    assert v2.id == f"{fluo.id}_v2" and v2.path.is_dir()
    assert ex.next_version_id(tmp_path, v2.id) == f"{fluo.id}_v3"
    assert sorted(read_manifest(tmp_path)) == [fluo.id, v2.id]
    # nothing temporary is left (the lock file is kept), and the root reads as a stage-1 root
    expected = [fluo.id, v2.id, MANIFEST, LOCK_FILE]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(expected)
    assert [p.name for p in list_samples(tmp_path)] == [fluo.id, v2.id]


def test_source_folder_is_never_the_target(fluo, sample_copy):
    before = tree_digest(sample_copy.parent)
    with pytest.raises(FileProblem, match="source"):
        ex.export_sample(
            sample_copy.parent,
            sample_copy.name,
            fluo.image,
            fluo.labels,
            source=sample_copy,
            if_exists="overwrite",
        )
    assert tree_digest(sample_copy.parent) == before


def test_unwritable_target(fluo, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(FileProblem, match="a_file"):
        ex.export_sample(blocker / "root", fluo.id, fluo.image, fluo.labels)
    with pytest.raises(FileProblem, match="not a folder"):
        ex.export_sample(blocker, fluo.id, fluo.image, fluo.labels)
    if Path("/proc").is_dir():  # read-only even for root
        with pytest.raises(FileProblem, match="/proc/nucleiseg"):
            ex.export_sample("/proc/nucleiseg", fluo.id, fluo.image, fluo.labels)
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            with pytest.raises(FileProblem, match="locked"):
                ex.export_sample(locked, fluo.id, fluo.image, fluo.labels)
            assert list(locked.iterdir()) == []
        finally:
            locked.chmod(0o700)


def test_failure_midway_leaves_nothing(fluo, tmp_path, monkeypatch):
    ex.export_sample(tmp_path, "first", fluo.image, fluo.labels)
    before = tree_digest(tmp_path)
    calls = []

    def failing_save(array, path):
        calls.append(path)
        if len(calls) == 5:
            raise OSError(28, "No space left on device", str(path))
        Image.fromarray(array).save(path, format="PNG")

    monkeypatch.setattr(ex, "_save_png", failing_save)
    with pytest.raises(FileProblem, match="No space left"):
        ex.export_sample(tmp_path, "second", fluo.image, fluo.labels)
    assert tree_digest(tmp_path) == before
    calls.clear()
    with pytest.raises(FileProblem, match="No space left"):
        ex.export_sample(tmp_path, "first", fluo.image, fluo.labels[::-1], if_exists="overwrite")
    assert tree_digest(tmp_path) == before  # the old version is back


def test_images_a_stage1_png_cannot_hold_are_refused(fluo, tmp_path):
    grey16 = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    labels = np.zeros((64, 64), np.uint16)
    with pytest.raises(ValueError, match="0..255"):
        ex.export_sample(tmp_path, "a", grey16, labels)
    with pytest.raises(ValueError, match="float"):
        ex.export_sample(tmp_path, "a", grey16.astype(np.float32), labels)
    rgba = np.zeros((64, 64, 4), np.uint8)
    with pytest.raises(ValueError, match="transparent"):
        ex.export_sample(tmp_path, "a", rgba, labels)
    with pytest.raises(ValueError, match="shape"):
        ex.export_sample(tmp_path, "a", fluo.image, labels)
    with pytest.raises(ValueError, match="not usable"):
        ex.export_sample(tmp_path, "../evil", fluo.image, fluo.labels)
    assert list(tmp_path.iterdir()) == []
    # lossless conversions: small uint16 values, opaque RGBA, grey stays grey
    small = (grey16 % 256).astype(np.uint16)
    r = ex.export_sample(tmp_path, "grey", small, labels)
    back = read_sample(r.path)
    assert back.image.ndim == 2 and np.array_equal(back.image, small)
    with Image.open(r.path / "images" / "grey.png") as im:
        assert im.mode == "L"
    rgba[..., 3] = 255
    rgba[..., 0] = 7
    r = ex.export_sample(tmp_path, "rgba", rgba, labels)
    assert np.array_equal(read_sample(r.path).image, rgba[..., :3])


def test_set_split(fluo, tmp_path):
    ex.export_sample(tmp_path, fluo.id, fluo.image, fluo.labels)
    assert read_manifest(tmp_path)[fluo.id]["split"] == "train"
    set_split(tmp_path, fluo.id, "validation")
    assert read_manifest(tmp_path)[fluo.id]["split"] == "validation"
    with pytest.raises(ValueError):
        set_split(tmp_path, fluo.id, "test")
    with pytest.raises(FileProblem, match="no sample"):
        set_split(tmp_path, "nope", "train")
    (tmp_path / MANIFEST).write_text("[1, 2]")
    with pytest.raises(FileProblem, match="manifest"):
        read_manifest(tmp_path)


def test_label_tiff(fluo, tmp_path):
    path = write_label_tiff(tmp_path / "sub" / "labels.tif", fluo.labels)
    assert np.array_equal(read_label_image(path), fluo.labels)
    with pytest.raises(FileProblem, match="already exists"):
        write_label_tiff(path, fluo.labels)
    write_label_tiff(path, fluo.labels[::-1], overwrite=True)
    assert np.array_equal(read_label_image(path), fluo.labels[::-1])
    big = np.zeros((4, 4), np.int64)
    big[0, 0] = 70000
    assert read_label_image(write_label_tiff(tmp_path / "big.tif", big)).dtype == np.uint32
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["labels.tif"]


def test_tiff_layout(small_root, tmp_path):
    samples = {f.name: quiet_read(f) for f in list_samples(small_root)}
    curated = tmp_path / "curated"
    for i, s in enumerate(samples.values()):
        ex.export_sample(curated, s.id, s.image, s.labels, split=("train", "validation")[i % 2])
    out = tmp_path / "tiffs"
    steps = []
    gen = iter_export_tiff_layout(curated, out)
    try:
        while True:
            steps.append(next(gen))
    except StopIteration as stop:
        assert stop.value == out
    assert steps[-1] == (len(samples), len(samples))
    for sample_id, s in samples.items():
        assert np.array_equal(tifffile.imread(out / "images" / f"{sample_id}.tif"), s.image)
        masks = read_label_image(out / "masks" / f"{sample_id}.tif")
        assert same_up_to_renumbering(masks, s.labels)
    with pytest.raises(FileProblem, match="already exists"):
        export_tiff_layout(curated, out)
    val = export_tiff_layout(curated, tmp_path / "val", split="validation")
    manifest = read_manifest(curated)
    expected = sorted(k for k, v in manifest.items() if v["split"] == "validation")
    assert sorted(p.stem for p in (val / "images").iterdir()) == expected
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# ---------------------------------------------------------------- CLI
@pytest.fixture
def run(capsys):
    """``nucleiseg ...`` through cli.main: (exit code, stdout, stderr)."""

    def _run(*argv):
        code = cli.main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return _run


def test_cli_export(run, fluo, tmp_path):
    labels_path = write_label_tiff(tmp_path / "in" / "labels.tif", fluo.labels)
    image_path = fluo.path / "images" / f"{fluo.id}.png"
    root = tmp_path / "curated"
    code, _, err = run("export", image_path, labels_path, "-o", root)
    assert code == 0, err
    back = read_sample(root / fluo.id)
    assert np.array_equal(back.image, fluo.image)
    assert same_up_to_renumbering(back.labels, fluo.labels)
    # refused, status 1, one line naming the folder, nothing changed
    before = tree_digest(root)
    code, _, err = run("export", image_path, labels_path, "-o", root)
    assert code == 1
    assert err.strip().count("\n") == 0 and str(root / fluo.id) in err and "exists" in err
    assert tree_digest(root) == before
    # --source keeps the names; --id and --new-version
    code, _, err = run(
        "export", image_path, labels_path, "-o", root, "--id", "mine", "--source", fluo.path
    )
    assert code == 0, err
    assert read_sample(root / "mine").mask_names == fluo.mask_names
    assert read_manifest(root)["mine"]["source"] == str(fluo.path)
    code, _, err = run(
        "export", image_path, labels_path, "-o", root, "--id", "mine", "--new-version"
    )
    assert code == 0 and (root / "mine_v2").is_dir()


def test_cli_export_bad_input(run, fluo, tmp_path):
    image_path = fluo.path / "images" / f"{fluo.id}.png"
    wrong = write_label_tiff(tmp_path / "wrong.tif", np.zeros((5, 5), np.uint16))
    code, _, err = run("export", image_path, wrong, "-o", tmp_path / "out")
    assert code == 1 and "wrong.tif" in err
    code, _, err = run("export", tmp_path / "missing.png", wrong, "-o", tmp_path / "out")
    assert code == 1 and "missing.png" in err and "does not exist" in err
    f16 = tmp_path / "deep.tif"
    tifffile.imwrite(f16, np.full((5, 5), 4000, np.uint16))
    code, _, err = run("export", f16, wrong, "-o", tmp_path / "out")
    assert code == 1 and "deep.tif" in err and "0..255" in err
    assert not (tmp_path / "out").exists()
