"""The nucleiseg command line: check, evaluate, samples and help, on real samples."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from conftest import tree_digest
from napari_nucleiseg.cli import main
from napari_nucleiseg.io import list_samples, read_sample, write_submission
from napari_nucleiseg.io.scoring import evaluate_paths
from napari_nucleiseg.io.stage1 import image_path
from napari_nucleiseg.metrics import score_dataset
from napari_nucleiseg.reference import (
    FINETUNE_ANCHOR,
    FINETUNE_EPOCHS,
    FINETUNE_LR,
    FINETUNE_REPEATS,
)
from napari_nucleiseg.samples import SAMPLES, sample_folder


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def perturbed(labels: np.ndarray, seed: int) -> np.ndarray:
    """A plausible prediction: shifted by a pixel, two nuclei dropped."""
    rng = np.random.default_rng(seed)
    pred = np.roll(labels, 1, axis=0)
    for v in rng.choice(np.unique(labels)[1:], 2, replace=False):
        pred[pred == v] = 0
    return pred


@pytest.fixture
def predictions(tmp_path, small_root):
    """The small root's truth, and perturbed predictions as TIFFs and as a submission CSV."""
    folder = tmp_path / "pred"
    folder.mkdir()
    items = []
    with pytest.warns(UserWarning):  # the corrected sample's overlap
        samples = [read_sample(f) for f in list_samples(small_root)]
    for k, s in enumerate(samples):
        pred = perturbed(s.labels, k)
        tifffile.imwrite(folder / f"{s.id}.tif", pred)
        items.append((s.id, s.labels, pred))
    csv = tmp_path / "sub.csv"
    write_submission(csv, [(i, p) for i, _, p in items])
    return folder, csv, items


def test_evaluate_tiffs_and_csv_agree_with_the_metric(capsys, small_root, predictions):
    folder, csv, items = predictions
    expected = score_dataset(items).as_dict()
    code, out, _ = run(capsys, "evaluate", folder, small_root, "--json")
    assert code == 0
    from_tiffs = json.loads(out)
    code, out, _ = run(capsys, "evaluate", csv, small_root, "--json")
    assert code == 0
    from_csv = json.loads(out)
    assert from_tiffs["score"] == pytest.approx(expected["score"], abs=1e-9)
    assert from_csv["score"] == pytest.approx(from_tiffs["score"], abs=1e-9)
    assert from_csv["ap"] == pytest.approx(from_tiffs["ap"], abs=1e-9)
    assert 0.2 < from_tiffs["score"] < 0.95


def test_evaluate_table_and_truth_as_label_folder(capsys, tmp_path, predictions):
    folder, _, items = predictions
    truth = tmp_path / "truth"
    truth.mkdir()
    for i, t, _ in items:
        tifffile.imwrite(truth / f"{i}.tif", t)
    code, out, _ = run(capsys, "evaluate", folder, truth)
    assert code == 0
    assert out.startswith("DSB2018 score: ") and "0.50" in out and "0.95" in out
    assert float(out.split()[2]) == pytest.approx(score_dataset(items).score, abs=1e-4)


def test_evaluate_missing_prediction_scores_zero(capsys, small_root, predictions):
    folder, _, items = predictions
    (folder / f"{items[0][0]}.tif").unlink()
    code, out, err = run(capsys, "evaluate", folder, small_root, "--json")
    result = json.loads(out)
    assert code == 0 and result["images"][items[0][0]] == 0.0
    assert result["missing"] == [items[0][0]] and "no prediction" in err


def test_evaluate_paths_pairs_files_for_scripts(small_root, predictions):
    """The pairing behind ``nucleiseg evaluate``, called from a script."""
    folder, _, items = predictions
    (folder / f"{items[0][0]}.tif").rename(folder / "stray.tif")
    seen = []

    def progress(pairs):
        for pair in pairs:
            seen.append(pair[0])
            yield pair

    result, missing, extra = evaluate_paths(folder, small_root, progress=progress)
    assert missing == [items[0][0]] and extra == ["stray"]
    assert seen == list(result.ids) == [i for i, _, _ in items]
    assert result.score == pytest.approx(score_dataset([items[0][:2] + (None,), *items[1:]]).score)


def test_evaluate_refuses_overlapping_submission(capsys, tmp_path, small_root):
    first = list_samples(small_root)[0].name
    csv = tmp_path / "bad.csv"
    csv.write_text(f"ImageId,EncodedPixels\n{first},1 10\n{first},5 10\n")
    code, _, err = run(capsys, "evaluate", csv, small_root)
    assert code == 1 and str(csv) in err and "overlaps" in err


def test_evaluate_wrong_size_prediction(capsys, small_root, predictions):
    folder, _, items = predictions
    tifffile.imwrite(folder / f"{items[0][0]}.tif", np.zeros((7, 7), np.uint16))
    code, _, err = run(capsys, "evaluate", folder, small_root)
    assert code == 1 and "7x7" in err


def test_evaluate_missing_paths(capsys, tmp_path, small_root):
    code, _, err = run(capsys, "evaluate", tmp_path / "nope", small_root)
    assert code == 1 and "nope" in err and err.count("\n") == 1


def test_check_exit_codes(capsys, small_root, sample_copy):
    code, out, _ = run(capsys, "check", small_root)
    assert code == 0 and out.startswith("warning:")  # the one overlap is a warning
    code, _, _ = run(capsys, "check", small_root, "--strict")
    assert code == 1
    bad = sorted((sample_copy / "masks").iterdir())[0]
    bad.write_bytes(b"nonsense")
    code, out, _ = run(capsys, "check", sample_copy)
    assert code == 1 and out.splitlines() == [f"{bad}: " + out.split(": ", 1)[1].strip()]


def test_check_names_an_empty_masks_folder_and_strict_fails_on_it(capsys, sample_copy):
    for mask in (sample_copy / "masks").iterdir():
        mask.unlink()
    code, out, err = run(capsys, "check", sample_copy.parent)
    assert (
        code == 0
        and out == f"warning: {sample_copy / 'masks'}: holds no mask: the sample has no nucleus\n"
    )
    assert "1 sample(s) checked: 0 error(s), 1 warning(s)" in err
    code, _, _ = run(capsys, "check", sample_copy.parent, "--strict")
    assert code == 1


def test_check_counts_a_sample_folder_without_images(capsys, sample_copy):
    shutil.rmtree(sample_copy / "images")
    code, out, err = run(capsys, "check", sample_copy.parent)
    assert code == 1 and out.splitlines() == [f"{image_path(sample_copy)}: does not exist"]
    assert "1 sample(s) checked: 1 error(s)" in err


def test_samples_are_copied_once(capsys, tmp_path):
    code, out, _ = run(capsys, "samples", "-o", tmp_path / "demo")
    assert code == 0 and len(list_samples(tmp_path / "demo")) == 2
    code, _, err = run(capsys, "samples", "-o", tmp_path / "demo")
    assert code == 1 and "already exists" in err and "--overwrite" in err


def test_samples_overwrite_replaces_only_the_shipped_folders(capsys, tmp_path):
    demo = tmp_path / "demo"
    run(capsys, "samples", "-o", demo)
    mine = demo / "mine.txt"
    mine.write_text("keep me")
    junk = demo / SAMPLES["histology"] / "masks" / "junk.png"
    junk.write_bytes(b"junk")
    code, out, err = run(capsys, "samples", "-o", demo, "--overwrite")
    assert code == 0, err
    assert not junk.exists() and mine.read_text() == "keep me"
    for kind, sample_id in SAMPLES.items():
        assert tree_digest(demo / sample_id) == tree_digest(sample_folder(kind))


def test_samples_overwrite_never_deletes_the_shipped_samples(capsys, tmp_path, monkeypatch):
    import napari_nucleiseg.samples as samples

    shipped = tmp_path / "shipped"  # stands in for the package's own folder
    for kind, sample_id in SAMPLES.items():
        shutil.copytree(sample_folder(kind), shipped / sample_id)
    before = tree_digest(shipped)
    monkeypatch.setattr(samples, "sample_folder", lambda kind: shipped / SAMPLES[kind])
    code, _, err = run(capsys, "samples", "-o", shipped, "--overwrite")
    assert code == 1 and "shipped sample itself" in err and tree_digest(shipped) == before


def test_readme_first_command_runs_twice(capsys, tmp_path, monkeypatch):
    """The set-up command of the README (after its pip installs) can be run again."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    line = readme.split("```bash\n", 1)[1].split("\n", 1)[0]
    commands = [shlex.split(c) for c in line.split(" && ") if c.startswith("nucleiseg ")]
    assert [c[1] for c in commands] == ["samples", "predict", "evaluate"]
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        for argv in commands:
            code, _, err = run(capsys, *argv[1:])
            assert code == 0, f"{shlex.join(argv)}: {err}"
    assert len(list((tmp_path / "demo-labels").glob("*.tif"))) == 2


def _help(command: str) -> str:
    """``nucleiseg COMMAND --help`` as a user sees it, whitespace folded."""
    out = subprocess.run(
        [sys.executable, "-m", "napari_nucleiseg.cli", command, "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return " ".join(out.split())


def test_help_shows_defaults_and_readable_choices():
    train = _help("train")
    for default in ["(default: 8)", "(default: adam)", "(default: 0.3)"]:
        assert default in train
    assert f"(default: 30, or {FINETUNE_EPOCHS} for a fine-tune)" in train  # --epochs
    assert f"(default: 1, or {FINETUNE_REPEATS} for a fine-tune" in train  # --repeats
    assert f"(default: 0.001, or {FINETUNE_LR} for a" in train  # a fine-tune's
    assert f"(default {FINETUNE_ANCHOR}; 0: none)" in train
    assert "--maps MAPS" in train and "body,border or body,border,contour" in train
    assert "{body,border,body" not in train
    predict = _help("predict")
    assert "(default: auto)" in predict and "folders of image files" in predict
    for text in [train, predict]:
        assert "default: None" not in text and "default: False" not in text


def test_console_script_runs():
    out = subprocess.run(
        [sys.executable, "-m", "napari_nucleiseg.cli", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.startswith("nucleiseg ")
