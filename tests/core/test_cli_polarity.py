"""``nucleiseg predict --invert``, ``--channel`` and the thresholds run as a user runs them
(subprocesses): the choice changes the labels, reaches every image of the batch (over each
image's own model) and a Dask worker's task, and a channel an image lacks is one line
naming the file, before anything is written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage as ndi

from napari_nucleiseg.batch import image_jobs, plan_batch
from napari_nucleiseg.cli.predict import channel_choice
from napari_nucleiseg.distributed import segment_on_worker
from napari_nucleiseg.io import read_sample
from napari_nucleiseg.io.images import read_label_image
from napari_nucleiseg.samples import sample_folder

CLI = [sys.executable, "-m", "napari_nucleiseg.cli"]


def nucleiseg(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, *map(str, args)], capture_output=True, text=True, timeout=300
    )  # fmt: skip


def predicted(result: subprocess.CompletedProcess, out: Path, stem: str) -> np.ndarray:
    assert result.returncode == 0, result.stderr
    return read_label_image(out / f"{stem}.tif")


def one_line_refusal(result: subprocess.CompletedProcess, *names) -> str:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for name in names:
        assert str(name) in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """The fluorescence sample as a grey PNG (nuclei.png), and as the red channel of a
    composite whose green channel is a cytoplasm stain around the nuclei (composite.png)."""
    folder = tmp_path_factory.mktemp("in")
    image = read_sample(sample_folder("fluorescence")).image
    grey = image[..., 0] if image.ndim == 3 else image
    cytoplasm = ndi.gaussian_filter(ndi.grey_dilation(grey, size=9), 2).astype(np.float32)
    rgb = np.stack([grey, np.clip(cytoplasm * 0.8, 0, 255), np.zeros_like(grey)], axis=-1)
    Image.fromarray(grey.astype(np.uint8)).save(folder / "nuclei.png")
    Image.fromarray(rgb.astype(np.uint8)).save(folder / "composite.png")
    return folder


def test_invert_yes_changes_the_labels_and_no_keeps_auto(tmp_path, images, tiny_checkpoint):
    image = images / "nuclei.png"
    runs = {}
    for choice in (None, "no", "yes"):
        out = tmp_path / str(choice)
        args = ["predict", image, "-o", out, "--model", tiny_checkpoint, "--device", "cpu"]
        runs[choice] = predicted(
            nucleiseg(*args, *(["--invert", choice] if choice else [])), out, "nuclei"
        )
    np.testing.assert_array_equal(runs[None], runs["no"])  # fluorescence: not inverted
    assert runs[None].max() > 20
    assert not np.array_equal(runs[None], runs["yes"])  # the inverted image: other labels
    assert runs["yes"].max() < runs[None].max() / 2


def test_channel_segments_that_channel_alone(tmp_path, images, tiny_checkpoint):
    common = ["--model", tiny_checkpoint, "--device", "cpu"]
    both = predicted(
        nucleiseg("predict", images, "-o", tmp_path / "all", *common), tmp_path / "all", "nuclei"
    )
    out = tmp_path / "red"
    red = predicted(
        nucleiseg("predict", images / "composite.png", "-o", out, "--channel", "red", *common),
        out,
        "composite",
    )
    np.testing.assert_array_equal(red, both)  # the red channel is the grey image
    mixed = read_label_image(tmp_path / "all" / "composite.tif")  # auto: the channels' mean
    assert not np.array_equal(mixed, both)


@pytest.mark.parametrize(
    ("name", "channel", "reason"),
    [
        ("composite.png", "5", "has 3 channels (0-2): there is no channel 5"),
        ("nuclei.png", "green", "has 1 channel (0): there is no channel 1"),
    ],
)
def test_a_channel_an_image_lacks_is_one_line(
    tmp_path, images, tiny_checkpoint, name, channel, reason
):
    out = tmp_path / "out"
    result = nucleiseg(
        "predict", images, "-o", out, "--model", tiny_checkpoint, "--channel", channel
    )  # fmt: skip
    line = one_line_refusal(result, images / name, reason)
    assert line.startswith("nucleiseg predict: error:")
    assert not out.exists()  # refused before the first image


def test_a_channel_that_is_no_channel_is_an_argparse_error(tmp_path, images):
    result = nucleiseg("predict", images, "-o", tmp_path / "out", "--channel", "purple")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "argument --channel: expected auto, a channel number" in result.stderr


@pytest.mark.parametrize(
    ("text", "value"), [("auto", "auto"), ("0", 0), ("2", 2), ("Red", 0), ("blue", 2)]
)
def test_channel_words(text, value):
    assert channel_choice(text) == value


def test_the_choice_reaches_a_dask_workers_task(tmp_path, images, tiny_checkpoint):
    """A worker loads the model itself: the job carries the run's polarity, and the task
    (what the cluster runs) segments with it as the CLI's --invert yes does."""
    chosen = {"invert": "always"}
    out = tmp_path / "task"
    plan = plan_batch([images / "nuclei.png"], out, choices=chosen)
    (job,) = image_jobs(plan)
    assert job.choices == chosen
    out.mkdir()
    result = segment_on_worker(job, str(tiny_checkpoint), "cpu", {})  # the diameter is the job's
    cli = tmp_path / "cli"
    args = ["predict", images / "nuclei.png", "-o", cli, "--model", tiny_checkpoint]
    expected = predicted(nucleiseg(*args, "--invert", "yes", "--device", "cpu"), cli, "nuclei")
    np.testing.assert_array_equal(read_label_image(out / "nuclei.tif"), expected)
    assert result.nuclei == expected.max()


def test_thresholds_apply_over_each_images_own_model(tmp_path):
    """--min-mean-prob and --min-size under --model auto: each image gets its kind's model
    with those two thresholds replaced and its others kept, as the library gives it."""
    from napari_nucleiseg.inference import drain
    from napari_nucleiseg.io.images import read_image_file
    from napari_nucleiseg.kinds import HE_MODEL
    from napari_nucleiseg.models import DEFAULT_MODEL, load_model, shipped_models
    from napari_nucleiseg.pipeline import segment

    if HE_MODEL not in shipped_models():
        pytest.skip(f"{HE_MODEL} is not installed")
    folder = tmp_path / "in"
    folder.mkdir()
    for name, kind in (("he", "histology"), ("dapi", "fluorescence")):
        Image.fromarray(read_sample(sample_folder(kind)).image).save(folder / f"{name}.png")
    chosen = {"min_mean_prob": 0.0, "min_size": 10}
    out, own = tmp_path / "out", tmp_path / "own"
    result = nucleiseg("predict", folder, "-o", out, "--min-mean-prob", "0", "--min-size", "10")
    assert result.returncode == 0, result.stderr
    assert nucleiseg("predict", folder, "-o", own).returncode == 0
    for name, model_name in (("he", HE_MODEL), ("dapi", DEFAULT_MODEL)):
        model, config = load_model(model_name)
        image = read_image_file(folder / f"{name}.png")
        _, (expected,) = drain(segment(model, config.chosen(chosen), image, diameter="auto"))
        labels = read_label_image(out / f"{name}.tif")
        np.testing.assert_array_equal(labels, expected)
        # nothing dropped for its mean: more nuclei than the model's own thresholds keep
        assert labels.max() > read_label_image(own / f"{name}.tif").max()


@pytest.mark.parametrize(
    "flag,bad", [("--min-mean-prob", "2"), ("--prob-threshold", "-0.1"), ("--min-size", "4.5")]
)
def test_a_threshold_out_of_range_is_an_argparse_error(tmp_path, images, flag, bad):
    result = nucleiseg("predict", images, "-o", tmp_path / "out", flag, bad)
    assert result.returncode == 2 and flag in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_run_sets_thresholds_and_normalisation_and_nothing_else():
    from napari_nucleiseg.cli.predict import THRESHOLD_FLAGS
    from napari_nucleiseg.models import ModelConfig
    from napari_nucleiseg.postprocess import THRESHOLDS

    assert [f[2:].replace("-", "_") for f, _, _ in THRESHOLD_FLAGS] == list(THRESHOLDS)
    own = ModelConfig("unet")
    assert own.chosen(None) is own
    chosen = own.chosen({"invert": "always", "min_mean_prob": 0.5, "min_size": 3})
    assert chosen.normalization.invert == "always"
    assert chosen.normalization.low == own.normalization.low
    assert (chosen.postprocess.min_mean_prob, chosen.postprocess.min_size) == (0.5, 3)
    assert chosen.postprocess.prob_threshold == own.postprocess.prob_threshold
    with pytest.raises(ValueError, match="not \\['min_seed_size'\\]"):
        own.chosen({"min_seed_size": 1})
