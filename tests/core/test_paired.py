"""The images/ + masks/ layout (StarDist and Cellpose style) for train, evaluate and predict."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from conftest import SHARED, small_sample_folders
from napari_nucleiseg.errors import FileProblem
from napari_nucleiseg.io import read_sample
from napari_nucleiseg.io.paired import is_paired_root, list_pairs, read_annotated, read_pair
from napari_nucleiseg.training import find_samples, read_samples

MONUSEG = SHARED.parent / "monuseg2018"


def _paired_root(tmp_path: Path, suffix: str = ".tif") -> Path:
    """The small real stage-1 samples written as images/<id>.png + masks/<id><suffix>."""
    root = tmp_path / "paired"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for folder in small_sample_folders():
        sample = read_sample(folder)
        Image.fromarray(sample.image).save(root / "images" / f"{sample.id}.png")
        if suffix == ".png":
            Image.fromarray(sample.labels.astype(np.uint16)).save(
                root / "masks" / f"{sample.id}.png"
            )
        else:
            tifffile.imwrite(root / "masks" / f"{sample.id}{suffix}", sample.labels)
    return root


@pytest.mark.parametrize("suffix", [".tif", ".tiff", ".png"])
def test_the_layout_reads_what_stage1_folders_hold(tmp_path, suffix):
    root = _paired_root(tmp_path, suffix)
    assert is_paired_root(root)
    samples = read_samples(find_samples(root))
    expected = {s.id: s for s in map(read_sample, small_sample_folders())}
    assert sorted(s.id for s in samples) == sorted(expected)
    for s in samples:
        assert np.array_equal(s.image, expected[s.id].image)
        assert np.array_equal(s.labels, expected[s.id].labels)


def test_every_monuseg_tile_reads_with_its_labels(shared_data):
    if not MONUSEG.is_dir():
        pytest.skip(f"MoNuSeg is not at {MONUSEG}")
    images = list_pairs(MONUSEG)
    assert len(images) == 30
    sample = read_pair(images[0])
    truth = tifffile.imread(MONUSEG / "masks" / f"{images[0].stem}.tif")
    assert sample.image.shape == (1000, 1000, 3)
    assert np.array_equal(sample.labels, truth)
    assert len(np.unique(sample.labels)) - 1 == len(np.unique(truth)) - 1 > 100


def test_a_missing_mask_is_named(tmp_path):
    root = _paired_root(tmp_path)
    victim = sorted((root / "masks").iterdir())[0]
    victim.unlink()
    with pytest.raises(FileProblem, match=victim.stem) as err:
        list_pairs(root)
    assert "masks" in str(err.value)


def test_a_mask_of_another_size_is_named(tmp_path):
    root = _paired_root(tmp_path)
    victim = sorted((root / "masks").iterdir())[0]
    tifffile.imwrite(victim, np.zeros((7, 9), np.uint16))
    image = root / "images" / f"{victim.stem}.png"
    with pytest.raises(FileProblem, match=r"7x9") as err:
        read_annotated(image)
    assert victim.name in str(err.value)


def test_two_images_of_one_stem_are_refused(tmp_path):
    root = _paired_root(tmp_path)
    first = sorted((root / "images").iterdir())[0]
    Image.open(first).save(first.with_suffix(".tif"))
    with pytest.raises(FileProblem, match="same stem"):
        list_pairs(root)


def _cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "napari_nucleiseg.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
    )


def test_predict_and_evaluate_take_a_paired_root(tmp_path):
    root = _paired_root(tmp_path)
    out = tmp_path / "pred"
    run = _cli("predict", root, "-o", out)
    assert run.returncode == 0, run.stderr
    assert sorted(p.stem for p in out.glob("*.tif")) == sorted(
        p.stem for p in (root / "images").iterdir()
    )
    run = _cli("evaluate", out, root, "--json")
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["n_images"] == len(small_sample_folders()) and not result["missing"]
    assert result["score"] > 0.3


def test_train_takes_a_paired_root(tmp_path):
    root = _paired_root(tmp_path)
    ckpt = tmp_path / "m.pt"
    run = _cli(
        "train", root, "-o", ckpt, "--epochs", "1", "--steps-per-epoch", "1",
        "--batch-size", "2", "--crop-size", "64", "--width", "4", "--depth", "2",
        "--diameter", "20", "--device", "cpu",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert ckpt.is_file()


def test_a_fine_tune_takes_a_paired_root_and_holds_out_by_id(tmp_path, tiny_checkpoint):
    from napari_nucleiseg.finetune import finetune, plan_validation
    from napari_nucleiseg.inference import drain
    from napari_nucleiseg.training import TrainConfig

    root = _paired_root(tmp_path)
    stems = sorted(p.stem for p in (root / "images").iterdir())
    validation = plan_validation([root], 0.5, seed=0)
    assert validation.ids and set(validation.ids) <= set(stems)
    settings = TrainConfig(epochs=1, batch_size=2, crop_size=64, max_steps=1)
    result = drain(
        finetune(tiny_checkpoint, [root], settings, output=tmp_path / "f.pt", device="cpu")
    )
    assert result.new_score is not None  # the held-out images were found and scored
