"""`nucleiseg predict`: inputs of every kind, label TIFFs and a submission that `evaluate` reads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from conftest import tree_digest
from napari_nucleiseg.cli import main
from napari_nucleiseg.errors import FileProblem
from napari_nucleiseg.io import read_sample
from napari_nucleiseg.io.inputs import collect_images
from napari_nucleiseg.models import ModelConfig, save_checkpoint
from napari_nucleiseg.samples import ROOT, SAMPLES, sample_folder


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A small random-weight U-Net checkpoint with a low threshold, so it finds something."""
    torch.manual_seed(0)
    config = ModelConfig("unet", {"depth": 2, "base": 4})
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_checkpoint(path, config.build(), config)
    return path


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_collect_images_of_every_kind(tmp_path, small_root):
    png = tmp_path / "plain.png"
    Image.fromarray(np.zeros((9, 9), np.uint8)).save(png)
    items = collect_images([png, small_root])
    assert [i for i, _ in items] == ["plain", *sorted(p.name for p in small_root.iterdir())]
    assert all(path.is_file() for _, path in items)
    # outputs are named by id: the same id twice is refused, naming both files
    with pytest.raises(FileProblem, match="has the id"):
        collect_images([sample_folder("fluorescence"), small_root])
    with pytest.raises(FileProblem, match="does not exist"):
        collect_images([tmp_path / "missing.png"])


@pytest.fixture
def image_folder(tmp_path):
    """A plain folder of images, as copied by hand, with files predict must leave out."""
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(folder / "b.png")
    Image.fromarray(np.zeros((21, 31, 3), np.uint8)).save(folder / "a.JPG")
    tifffile.imwrite(folder / "c.tiff", np.zeros((22, 32), np.uint16))
    Image.fromarray(np.zeros((9, 9), np.uint8)).save(folder / ".hidden.png")
    Image.fromarray(np.zeros((9, 9), np.uint8)).save(folder / "sub" / "d.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_collect_images_of_a_folder(tmp_path, image_folder):
    items = collect_images([image_folder])
    assert items == [
        (p.stem, image_folder / p) for p in [Path("a.JPG"), Path("b.png"), Path("c.tiff")]
    ]
    # one id twice, within a folder or across inputs: an error naming both files
    tifffile.imwrite(image_folder / "b.tif", np.zeros((5, 5), np.uint8))
    with pytest.raises(FileProblem, match="has the id 'b'") as info:
        collect_images([image_folder])
    assert str(image_folder / "b.png") in str(info.value)
    assert str(image_folder / "b.tif") in str(info.value)
    for empty in [tmp_path / "empty", image_folder / "sub" / "only_text"]:
        empty.mkdir()
        (empty / "readme.txt").write_text("x")
        with pytest.raises(FileProblem, match="holds no image file") as info:
            collect_images([empty])
        assert info.value.path == str(empty)


def test_predict_a_folder_of_images(capsys, tmp_path, tiny_model, image_folder):
    out = tmp_path / "out"
    code, _, err = run(capsys, "predict", image_folder, "-o", out, "--model", tiny_model)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["a.tif", "b.tif", "c.tif"]
    assert tifffile.imread(out / "a.tif").shape == (21, 31)
    (image_folder / "b.tiff").write_bytes(b"")
    code, _, err = run(
        capsys, "predict", image_folder, "-o", tmp_path / "o2", "--model", tiny_model
    )
    assert code == 1 and err.count("\n") == 1
    assert str(image_folder / "b.png") in err and str(image_folder / "b.tiff") in err


def test_predict_overwrite_never_replaces_an_input(capsys, tmp_path, tiny_model, image_folder):
    """``-o`` the input folder: a TIFF input would be its own output."""
    tiff = image_folder / "c.tiff"
    tiff.rename(image_folder / "c.tif")
    before = tree_digest(image_folder)
    for inputs in [[image_folder / "c.tif"], [image_folder]]:
        code, _, err = run(
            capsys, "predict", *inputs, "-o", image_folder, "--model", tiny_model, "--overwrite"
        )
        assert code == 1 and str(image_folder / "c.tif") in err and "is an input" in err
        assert tree_digest(image_folder) == before
    code, _, err = run(
        capsys, "predict", image_folder / "b.png", "-o", image_folder, "--model", tiny_model
    )
    assert code == 0, err  # -o the input folder is fine where no input is replaced
    assert (image_folder / "b.tif").is_file()


def test_predict_writes_label_tiffs_and_submission(capsys, tmp_path, tiny_model):
    out = tmp_path / "out"
    csv = tmp_path / "sub.csv"
    code, _, err = run(
        capsys,
        "predict",
        ROOT,
        "-o",
        out,
        "--model",
        tiny_model,
        "--device",
        "cpu",
        "--submission",
        csv,
    )
    assert code == 0, err
    for kind, sample_id in SAMPLES.items():
        labels = tifffile.imread(out / f"{sample_id}.tif")
        assert labels.dtype == np.uint16
        assert labels.shape == read_sample(sample_folder(kind)).image.shape[:2]
    code, out_json, _ = run(capsys, "evaluate", csv, ROOT, "--json")
    from_csv = json.loads(out_json)
    code, out_json, _ = run(capsys, "evaluate", out, ROOT, "--json")
    assert code == 0 and json.loads(out_json)["score"] == pytest.approx(from_csv["score"])
    assert csv.read_text().startswith("ImageId,EncodedPixels\n")


def test_predict_refuses_to_overwrite(capsys, tmp_path, tiny_model):
    out = tmp_path / "out"
    out.mkdir()
    existing = out / f"{SAMPLES['histology']}.tif"
    existing.write_bytes(b"precious")
    code, _, err = run(capsys, "predict", ROOT, "-o", out, "--model", tiny_model)
    assert code == 1 and str(existing) in err and "already exists" in err
    assert existing.read_bytes() == b"precious"
    assert sorted(p.name for p in out.iterdir()) == [existing.name]


@pytest.mark.parametrize(
    "image",
    [
        np.full((40, 50), 1000, np.uint16),
        np.zeros((40, 50, 4), np.uint8),
        np.random.default_rng(0).random((33, 47)),
    ],
    ids=["uint16", "rgba", "float"],
)
def test_predict_any_dtype(capsys, tmp_path, tiny_model, image):
    path = tmp_path / "x.tif"
    tifffile.imwrite(path, image)
    code, _, err = run(capsys, "predict", path, "-o", tmp_path / "out", "--model", tiny_model)
    assert code == 0, err
    assert tifffile.imread(tmp_path / "out" / "x.tif").shape == image.shape[:2]


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda p: p.write_bytes(b"\x89PNG broken"), "cannot be decoded"),
        (lambda p: tifffile.imwrite(p.with_suffix(".tif"), np.zeros((3, 8, 8), np.uint8)), "2-D"),
    ],
    ids=["corrupt", "3-D"],
)
def test_predict_bad_image_names_the_file(capsys, tmp_path, tiny_model, make, message):
    path = tmp_path / "bad.png"
    make(path)
    target = path if path.exists() else path.with_suffix(".tif")
    code, _, err = run(capsys, "predict", target, "-o", tmp_path / "out", "--model", tiny_model)
    assert code == 1 and str(target) in err and message in err
    assert err.strip().count("\n") <= 1


def test_predict_wrong_checkpoint(capsys, tmp_path):
    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(b"not a checkpoint")
    code, _, err = run(
        capsys, "predict", sample_folder("histology"), "-o", tmp_path / "o", "--model", bogus
    )
    assert code == 1 and str(bogus) in err
    assert not (tmp_path / "o").exists()


def test_predict_unwritable_output(capsys, tmp_path, tiny_model):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run(
        capsys, "predict", sample_folder("histology"), "-o", blocker / "sub", "--model", tiny_model
    )
    assert code == 1 and str(blocker / "sub") in err
    shutil.rmtree(tmp_path / "file", ignore_errors=True)
