"""The stage-1 reader core on real samples, and every bad input it must refuse clearly."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import small_sample_folders, tree_digest
from napari_nucleiseg.errors import FileProblem
from napari_nucleiseg.io import OverlapWarning, check, list_samples, read_sample, resolve_samples
from napari_nucleiseg.io.images import label_dtype
from napari_nucleiseg.io.stage1 import image_path, mask_paths


def assert_sample_exact(folder: Path) -> None:
    """Labels equal the mask files, read here independently with PIL, overlap pixels aside."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OverlapWarning)
        sample = read_sample(folder)
    raw = np.asarray(Image.open(image_path(folder)))
    assert sample.image.dtype == np.uint8
    assert sample.image.shape[:2] == raw.shape[:2]
    np.testing.assert_array_equal(sample.image, raw[..., :3] if raw.ndim == 3 else raw)
    masks = mask_paths(folder)
    assert len(sample.mask_names) == len(masks)
    assert sample.labels.dtype == np.uint16
    assert int(sample.labels.max()) <= len(masks)
    stack = np.stack([np.asarray(Image.open(p)) > 0 for p in masks])
    shared = stack.sum(axis=0) > 1
    assert shared.sum() == sum(o.pixels for o in sample.overlaps)
    for label, name in sample.mask_names.items():
        mask = stack[[p.name for p in masks].index(name)]
        got = sample.labels == label
        np.testing.assert_array_equal(
            got & ~shared, mask & ~shared, err_msg=f"{folder.name}/{name}"
        )
        assert not np.any(got & ~mask), f"{folder.name}/{name}: label outside its mask"
    # every pixel of the union is labelled
    np.testing.assert_array_equal(sample.labels > 0, stack.any(axis=0))


@pytest.mark.parametrize("folder", small_sample_folders(), ids=lambda p: p.name[:8])
def test_small_samples_are_read_exactly(folder):
    assert_sample_exact(folder)


def test_rgba_alpha_is_dropped_and_colour_kept():
    from napari_nucleiseg.samples import sample_folder

    histology = read_sample(sample_folder("histology"))
    assert histology.image.shape == (256, 320, 3)
    assert not np.array_equal(histology.image[..., 0], histology.image[..., 2])
    assert len(histology.mask_names) == 37
    assert read_sample(sample_folder("fluorescence")).labels.max() == 57


def test_overlap_goes_to_the_smaller_mask_with_a_warning_naming_both(small_samples):
    folder = small_samples[-1]  # the corrected sample with one shared pixel
    with pytest.warns(OverlapWarning) as record:
        sample = read_sample(folder)
    (overlap,) = sample.overlaps
    assert overlap.winner in str(record[0].message) and overlap.loser in str(record[0].message)
    masks = {p.name: np.asarray(Image.open(p)) > 0 for p in mask_paths(folder)}
    both = masks[overlap.winner] & masks[overlap.loser]
    assert both.sum() == overlap.pixels == 1
    assert masks[overlap.winner].sum() <= masks[overlap.loser].sum()
    winner_label = {v: k for k, v in sample.mask_names.items()}[overlap.winner]
    assert np.all(sample.labels[both] == winner_label)
    # deterministic: reading again gives the same labels
    with pytest.warns(OverlapWarning):
        np.testing.assert_array_equal(read_sample(folder).labels, sample.labels)


def test_label_dtype_grows_past_uint16():
    assert label_dtype(65_535) == np.uint16
    assert label_dtype(65_536) == np.uint32


def test_list_and_resolve(small_root):
    ids = [p.name for p in list_samples(small_root)]
    assert ids == sorted(ids) and len(ids) == 3
    one = list_samples(small_root)[0]
    assert resolve_samples(one) == [one]
    assert resolve_samples(small_root) == list_samples(small_root)
    assert check(small_root) == [p for p in check(small_root) if p.severity == "warning"]


# ------------------------------------------------------------------ bad input
def _expect_problem(path_part: Path | str, func, *args):
    with pytest.raises(FileProblem) as info:
        func(*args)
    assert str(path_part) in str(info.value), str(info.value)
    return info.value


def _unchanged(folder, func, *args, path_part):
    before = tree_digest(folder)
    err = _expect_problem(path_part, func, *args)
    assert tree_digest(folder) == before
    problems = check(folder)
    assert any(str(path_part) in str(p) and p.severity == "error" for p in problems), problems
    assert tree_digest(folder) == before
    return err


def test_missing_path(tmp_path):
    missing = tmp_path / "nope"
    _expect_problem(missing, read_sample, missing)
    _expect_problem(missing, list_samples, missing)
    assert "does not exist" in str(check(missing)[0])


def test_root_with_no_samples(tmp_path):
    (tmp_path / "empty_root" / "something").mkdir(parents=True)
    err = _expect_problem(tmp_path / "empty_root", list_samples, tmp_path / "empty_root")
    assert "no stage-1 sample" in str(err)


def test_sample_without_images_folder(sample_copy):
    shutil.rmtree(sample_copy / "images")
    _unchanged(sample_copy, read_sample, sample_copy, path_part=image_path(sample_copy))


def test_mask_of_another_size(sample_copy):
    mask = mask_paths(sample_copy)[3]
    Image.fromarray(np.full((10, 12), 255, np.uint8)).save(mask)
    err = _unchanged(sample_copy, read_sample, sample_copy, path_part=mask)
    assert "10x12" in str(err) and "256x256" in str(err)


def test_corrupt_image_png(sample_copy):
    image_path(sample_copy).write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    _unchanged(sample_copy, read_sample, sample_copy, path_part=image_path(sample_copy))


def test_truncated_mask_png(sample_copy):
    mask = mask_paths(sample_copy)[0]
    mask.write_bytes(mask.read_bytes()[:60])
    _unchanged(sample_copy, read_sample, sample_copy, path_part=mask)


def test_non_binary_mask(sample_copy):
    mask = mask_paths(sample_copy)[1]
    values = np.asarray(Image.open(mask)).copy()
    values[values > 0] = np.where(np.arange(values[values > 0].size) % 2, 255, 128)
    Image.fromarray(values).save(mask)
    err = _unchanged(sample_copy, read_sample, sample_copy, path_part=mask)
    assert "not binary" in str(err)


def test_rgb_mask_is_refused(sample_copy):
    mask = mask_paths(sample_copy)[2]
    Image.open(mask).convert("RGB").save(mask)
    _unchanged(sample_copy, read_sample, sample_copy, path_part=mask)


def test_sixteen_bit_image(sample_copy):
    grey = np.asarray(Image.open(image_path(sample_copy)))[..., 0].astype(np.uint16) * 257
    Image.fromarray(grey).save(image_path(sample_copy))
    err = _unchanged(sample_copy, read_sample, sample_copy, path_part=image_path(sample_copy))
    assert "16-bit" in str(err)


def test_transparent_alpha(sample_copy):
    rgba = np.asarray(Image.open(image_path(sample_copy))).copy()
    rgba[:10, :10, 3] = 0
    Image.fromarray(rgba).save(image_path(sample_copy))
    err = _unchanged(sample_copy, read_sample, sample_copy, path_part=image_path(sample_copy))
    assert "alpha" in str(err)


def test_empty_masks_folder_is_an_image_without_nuclei(sample_copy):
    for p in mask_paths(sample_copy):
        p.unlink()
    sample = read_sample(sample_copy)
    assert sample.labels.shape == sample.image.shape[:2]
    assert not sample.labels.any() and sample.mask_names == {}
    # legal in DSB2018, but suspicious: a warning naming the folder
    assert [(p.path, p.severity) for p in check(sample_copy)] == [
        (sample_copy / "masks", "warning")
    ]


@pytest.mark.parametrize("damage", ["no images folder", "image misnamed"])
def test_root_check_names_a_sample_folder_without_its_image(sample_copy, damage):
    """A root's folder with masks/ but no images/<id>.png is an error, alone or beside others."""
    root = sample_copy.parent
    broken = root / "broken"
    shutil.copytree(sample_copy / "masks", broken / "masks")
    if damage == "image misnamed":
        (broken / "images").mkdir()
        shutil.copy(image_path(sample_copy), broken / "images" / "other.png")
    errors = [p for p in check(root) if p.severity == "error"]
    assert [p.path for p in errors] == [image_path(broken)]
    assert "does not exist" in str(errors[0])
    shutil.rmtree(sample_copy)  # alone in its root: still named, not "no stage-1 sample"
    assert [p.path for p in check(root)] == [image_path(broken)]


def test_no_masks_folder_reads_image_only(sample_copy):
    shutil.rmtree(sample_copy / "masks")
    sample = read_sample(sample_copy)
    assert sample.labels is None and sample.image.shape == (256, 256, 3)
    assert [p.severity for p in check(sample_copy)] == ["warning"]


def test_empty_mask_file_is_reported(sample_copy):
    mask = mask_paths(sample_copy)[0]
    Image.fromarray(np.zeros((256, 256), np.uint8)).save(mask)
    assert any(str(mask) in str(p) and "empty" in str(p) for p in check(sample_copy))


def test_check_reports_every_problem_not_only_the_first(sample_copy):
    masks = mask_paths(sample_copy)
    masks[0].write_bytes(b"not a png")
    Image.fromarray(np.full((5, 5), 255, np.uint8)).save(masks[1])
    problems = [str(p) for p in check(sample_copy)]
    assert any(str(masks[0]) in p for p in problems) and any(str(masks[1]) in p for p in problems)


# ------------------------------------------------------------------ the full real data set
@pytest.mark.slow
@pytest.mark.parametrize("name,count", [("stage1_train", 670), ("stage1_train_fixed", 664)])
def test_every_real_sample_is_read_exactly(shared_data, name, count):
    folders = list_samples(shared_data / name)
    assert len(folders) == count
    for folder in folders:
        assert_sample_exact(folder)
