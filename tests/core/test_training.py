"""Training: the loss falls on real samples, a seed repeats a run, cancel stops, the best loads."""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import TESTS
from napari_nucleiseg.finetune import finetune_settings
from napari_nucleiseg.inference import drain
from napari_nucleiseg.io import read_sample
from napari_nucleiseg.models import ModelConfig, TrainingInfo, load_model
from napari_nucleiseg.reference import FINETUNE_ANCHOR, FINETUNE_LR, FINETUNE_REPEATS
from napari_nucleiseg.samples import sample_folder
from napari_nucleiseg.training import (
    AugmentConfig,
    TrainConfig,
    bce_dice_loss,
    gap_weighting,
    lr_factor,
    make_optimizer,
    train,
)

CONFIG = ModelConfig("unet", {"depth": 2, "base": 8})
QUICK = TrainConfig(
    epochs=1, batch_size=4, crop_size=96, repeats=2, optimizer="adam", lr=1e-2,
    schedule="constant", weight_decay=0.0, augment=AugmentConfig.none(), seed=0,
)  # fmt: skip


@pytest.fixture(scope="module")
def samples():
    return [read_sample(sample_folder(kind)) for kind in ("fluorescence", "histology")]


def step_losses(gen) -> list[float]:
    losses = []
    drain(gen, lambda p: p.phase == "step" and losses.append(p.loss))
    return losses


def test_a_few_steps_reduce_the_loss(samples):
    settings = replace(QUICK, repeats=24)  # 12 steps
    losses = step_losses(train(CONFIG, samples, settings=settings, device="cpu"))
    assert len(losses) == 12
    assert np.mean(losses[-3:]) < 0.9 * np.mean(losses[:3]), losses


def test_same_seed_same_run(samples):
    settings = replace(QUICK, augment=AugmentConfig(), max_steps=1)
    a = step_losses(train(CONFIG, samples, settings=settings, device="cpu"))
    b = step_losses(train(CONFIG, samples, settings=settings, device="cpu"))
    assert a == b
    other = replace(settings, seed=1)
    assert step_losses(train(CONFIG, samples, settings=other, device="cpu")) != a


def test_cancel_stops_promptly(samples, tmp_path):
    polls = []

    def should_stop() -> bool:
        polls.append(1)
        return len(polls) > 2

    settings = replace(QUICK, epochs=50, repeats=4)
    gen = train(CONFIG, samples, samples[:1], settings, checkpoint=tmp_path / "c.pt", device="cpu",
                should_stop=should_stop)  # fmt: skip
    events = []
    result = drain(gen, events.append)
    assert result.cancelled
    assert [e.phase for e in events] == ["step", "step"]
    assert result.history == [] and result.checkpoint is None
    assert not (tmp_path / "c.pt").exists()


def test_closing_the_generator_stops_it(samples):
    gen = train(CONFIG, samples, settings=replace(QUICK, epochs=50))
    assert next(gen).phase == "step"
    gen.close()  # what napari's thread_worker does on quit


def test_best_checkpoint_is_kept_and_loads(samples, tmp_path):
    path = tmp_path / "best.pt"
    config = ModelConfig(
        "linknet", {"width": 8}, training=TrainingInfo(data_roots=["shipped"], exclude_ids=["x"])
    )
    settings = replace(QUICK, epochs=2)
    epochs = []
    result = drain(
        train(config, samples[1:], samples[:1], settings, checkpoint=path, device="cpu"),
        lambda p: p.phase == "epoch" and epochs.append(p),
    )
    assert [e.epoch for e in epochs] == [1, 2]
    assert all(e.val_score is not None and 0 <= e.val_score <= 1 for e in epochs)
    assert result.best_score == max(e.val_score for e in epochs)
    assert result.checkpoint == path and path.is_file()
    model, loaded = load_model(path)
    info = loaded.training
    assert info.data_roots == ["shipped"] and info.exclude_ids == ["x"]
    assert info.val_ids == [samples[0].id]
    assert info.scores["val_dsb"] == result.best_score
    assert info.epochs == result.best_epoch
    assert info.settings["optimizer"] == "adam" and info.machine.startswith("cpu")
    # the returned model holds the best weights, as the file does
    best = result.model.state_dict()
    assert all(torch.equal(v, best[k]) for k, v in model.state_dict().items())


def test_moving_average_is_what_is_kept_and_leaves_training_alone(samples):
    settings = replace(QUICK, epochs=2, max_steps=3)

    def run(decay):
        losses = []
        result = drain(
            train(CONFIG, samples, settings=replace(settings, ema_decay=decay), device="cpu"),
            lambda p: p.phase == "step" and losses.append(p.loss),
        )
        return losses, result.model.state_dict()

    raw_losses, raw = run(0.0)
    ema_losses, ema = run(0.9)
    # the same steps are taken; only the weights kept differ
    assert ema_losses == raw_losses
    assert not all(torch.equal(v, ema[k]) for k, v in raw.items())
    # a decay near 0 averages nothing: the kept weights are the raw ones
    _, fresh = run(1e-9)
    assert all(torch.allclose(v.float(), fresh[k].float(), atol=1e-5) for k, v in raw.items())
    with pytest.raises(ValueError, match="ema_decay"):
        TrainConfig(ema_decay=1.0)


def weights_of(model) -> list[str]:
    return [k for k, _ in model.named_parameters()]


def test_keeping_norm_statistics_trains_scale_and_shift_only(samples):
    """A fine-tune that keeps batch norm's statistics leaves them as they were and still
    learns every weight, batch norm's scale and shift too; without it they move."""

    def stats(model) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in model.state_dict().items() if "running" in k}

    def run(keep: bool):
        model = CONFIG.build()
        before, weights = stats(model), {k: v.clone() for k, v in model.named_parameters()}
        settings = replace(QUICK, max_steps=2, keep_norm_stats=keep)
        result = drain(train(CONFIG, samples, settings=settings, model=model, device="cpu"))
        after = stats(result.model)
        moved = {k for k, v in result.model.named_parameters() if not torch.equal(v, weights[k])}
        return before, after, moved

    before, after, moved = run(True)
    assert before and all(torch.equal(v, after[k]) for k, v in before.items())
    assert moved == set(weights_of(CONFIG.build()))  # batch norm's scale and shift included
    before, after, _ = run(False)
    assert not all(torch.equal(v, after[k]) for k, v in before.items())


def test_an_anchor_holds_the_weights_near_where_they_started(samples):
    """L2-SP: with an anchor the weights end nearer their start than without; the
    fine-tune defaults keep batch norm's statistics at the fine-tune's learning rate."""

    def moved(anchor: float) -> float:
        model = CONFIG.build()
        start = {k: v.clone() for k, v in model.named_parameters()}
        settings = replace(QUICK, epochs=4, max_steps=2, anchor=anchor)
        result = drain(train(CONFIG, samples, settings=settings, model=model, device="cpu"))
        return sum(float((v - start[k]).norm()) for k, v in result.model.named_parameters())

    free, held = moved(0.0), moved(1e3)
    assert 0 < held < free / 2
    with pytest.raises(ValueError, match="anchor"):
        TrainConfig(anchor=-1)
    tuned = finetune_settings(epochs=3)
    assert tuned.lr == FINETUNE_LR and tuned.keep_norm_stats and tuned.epochs == 3
    assert tuned.anchor == FINETUNE_ANCHOR > 0 and finetune_settings(anchor=0).anchor == 0
    assert finetune_settings(lr=1e-3).lr == 1e-3


@pytest.mark.parametrize("name", ["sgd", "rmsprop", "adam", "adamw"])
def test_optimizers_step(name):
    w = torch.nn.Parameter(torch.ones(3))
    opt = make_optimizer([w], TrainConfig(optimizer=name, lr=0.1, weight_decay=0.01))
    (w**2).sum().backward()
    opt.step()
    assert (w < 1).all()
    if name == "sgd":
        assert opt.param_groups[0]["nesterov"] and opt.param_groups[0]["weight_decay"] == 0.01


def test_schedules():
    cosine = TrainConfig(schedule="cosine", min_lr_factor=0.01)
    assert lr_factor(0, 100, 10, cosine) == pytest.approx(1.0)
    assert lr_factor(99, 100, 10, cosine) == pytest.approx(0.01)
    step = TrainConfig(schedule="step", step_epochs=2, step_gamma=0.5)
    assert [lr_factor(s, 100, 10, step) for s in (0, 19, 20, 40)] == [1, 1, 0.5, 0.25]
    warm = TrainConfig(schedule="constant", warmup_steps=4)
    assert [lr_factor(s, 100, 10, warm) for s in range(5)] == [0.25, 0.5, 0.75, 1, 1]
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="lbfgs")


def test_loss_is_low_for_a_perfect_prediction():
    targets = (torch.rand(2, 2, 16, 16) > 0.5).float()
    perfect = bce_dice_loss((targets * 2 - 1) * 20, targets)
    wrong = bce_dice_loss((1 - targets * 2) * 20, targets)
    assert perfect < 0.01 < wrong


def test_gap_weight_stresses_only_the_pixels_between_nuclei(samples):
    """A gap-pixel mistake costs 1 + gap_weight times one elsewhere; no border map, no weight."""
    maps = ("body", "border", "contour")
    targets = torch.zeros(1, 3, 8, 8)
    targets[0, 1, 4, :] = 1  # a gap row in the border map
    weight = gap_weighting(maps, 9.0)(targets)
    assert weight.shape == (1, 1, 8, 8)
    assert torch.all(weight[0, 0, 4] == 10) and weight.sum() == 64 + 9 * 8
    wrong_at = {}
    for row in (4, 0):  # the same one-row mistake in the body map, on and off the gap
        logits = (targets * 2 - 1) * 20
        logits[0, 0, row, :] = 20
        wrong_at[row] = float(bce_dice_loss(logits, targets, dice_weight=0, pixel_weight=weight))
    assert wrong_at[4] == pytest.approx(10 * wrong_at[0], rel=1e-3)
    assert gap_weighting(maps, 0.0)(targets) is None
    with pytest.raises(ValueError, match="border"):
        gap_weighting(("body",), 1.0)
    with pytest.raises(ValueError, match="gap_weight"):
        TrainConfig(gap_weight=-1)
    # a run with the weight trains and reduces its loss like one without
    settings = replace(QUICK, repeats=24, gap_weight=5.0)
    losses = step_losses(train(CONFIG, samples, settings=settings, device="cpu"))
    assert np.mean(losses[-3:]) < 0.9 * np.mean(losses[:3]), losses


def test_tune_postprocess_is_never_worse_than_the_defaults(monkeypatch):
    import torch
    from scipy import ndimage as ndi

    from napari_nucleiseg.io import read_sample
    from napari_nucleiseg.models import ModelConfig
    from napari_nucleiseg.postprocess import targets_from_labels
    from napari_nucleiseg.samples import sample_folder
    from napari_nucleiseg.training import tune

    torch.manual_seed(0)
    config = ModelConfig("unet", {"depth": 2, "base": 4})
    samples = [read_sample(sample_folder("fluorescence"))]
    # maps a network might give: blurred truth, and faint texture between the nuclei, so
    # that the thresholds, the shape split and both bounds change the score
    truth_maps = targets_from_labels(samples[0].labels, config.maps)
    texture = ndi.gaussian_filter(np.random.default_rng(0).random(truth_maps.shape[1:]), 3)
    seen = truth_maps.copy()
    seen[0] = np.clip(ndi.gaussian_filter(truth_maps[0], 1.5) + 12 * (texture - 0.5), 0, 1)

    def predict(model, config, image, device=None, diameter="auto"):
        return seen.astype(np.float32)

    monkeypatch.setattr(tune, "image_maps", predict)
    scored = []
    real = tune.labels_from_predicted
    monkeypatch.setattr(
        tune,
        "labels_from_predicted",
        lambda maps, cfg, post: scored.append(post.split_depth) or real(maps, cfg, post),
    )
    model = config.build()
    best, best_result, default_score = tune.tune_postprocess(
        model, config, samples, prob_thresholds=(0.3, 0.5), seed_thresholds=(0.5, 0.7),
        min_sizes=(40, 10), min_mean_probs=(0.0, 0.9),
    )  # fmt: skip
    assert best_result.ids == (samples[0].id,)  # per-image scores, for reports by kind
    assert set(scored) == set(tune.SPLIT_DEPTHS)  # the shape split is tuned too
    # the best of the default and every candidate (the smallest area too), each on its own
    maps = [tune.image_maps(model, config, s.image) for s in samples]
    grid = [config.postprocess] + [
        replace(
            config.postprocess,
            prob_threshold=p,
            seed_threshold=q,
            split_depth=d,
            min_size=m,
            min_mean_prob=c,
        )  # fmt: skip
        for p in (0.3, 0.5)
        for q in (0.5, 0.7)
        for d in tune.SPLIT_DEPTHS
        for m in (10, 40)
        for c in (0.0, 0.9)
        if q >= p
    ]
    scores = [tune.score_postprocess(config, g, samples, maps).score for g in grid]
    assert len({round(x, 6) for x in scores}) > 10, "the grid's settings must matter"
    assert default_score == pytest.approx(scores[0])
    assert best_result.score == pytest.approx(max(scores))
    assert best in grid and scores[grid.index(best)] == pytest.approx(max(scores))


def test_the_tuner_chooses_the_smallest_area_that_drops_specks(monkeypatch, tmp_path):
    """Maps of the true nuclei plus 25-px specks: of 10 and 45 px, the tuner keeps 45."""
    from napari_nucleiseg.io import Sample
    from napari_nucleiseg.postprocess import targets_from_labels
    from napari_nucleiseg.training import tune

    yy, xx = np.mgrid[:96, :96]
    truth = np.zeros((96, 96), np.uint16)
    for i, (y, x) in enumerate([(20, 20), (20, 70), (70, 20), (70, 70)], start=1):
        truth[(yy - y) ** 2 + (xx - x) ** 2 <= 100] = i
    seen = truth.copy()
    seen[44:49, 44:49], seen[5:10, 44:49] = 5, 6  # specks of 25 px
    config = ModelConfig("unet", {"depth": 2, "base": 4})
    maps = targets_from_labels(seen, config.maps)

    def predict(model, config, image, device=None, diameter="auto"):
        return maps

    monkeypatch.setattr(tune, "image_maps", predict)
    sample = Sample("s", tmp_path, np.zeros((96, 96), np.uint8), truth)
    best, result, default = tune.tune_postprocess(None, config, [sample], min_sizes=(10, 45))
    assert best.min_size == 45 and result.score == 1.0 > default


def test_thresholds_across_held_out_kinds_are_the_best_mean_not_one_kinds_best(tmp_path):
    """Two models' maps, each on its own kind: real nuclei of 29 px in one, specks of 25 px in
    the other. Alone, the first keeps 10 px; across both, 45 px has the best mean (0.8 and
    1.0, against 1.0 and 4/6), and every cell's score in the table is its own tuner's."""
    from napari_nucleiseg.io import Sample
    from napari_nucleiseg.postprocess import targets_from_labels
    from napari_nucleiseg.training import tune

    yy, xx = np.mgrid[:96, :96]
    truth = np.zeros((96, 96), np.uint16)
    for i, (y, x) in enumerate([(20, 20), (20, 70), (70, 20), (70, 70)], start=1):
        truth[(yy - y) ** 2 + (xx - x) ** 2 <= 100] = i
    specks, small = truth.copy(), truth.copy()
    specks[44:49, 44:49], specks[5:10, 44:49] = 5, 6
    small[(yy - 46) ** 2 + (xx - 46) ** 2 <= 9] = 5
    config = ModelConfig("unet", {"depth": 2, "base": 4})
    cells = [
        (config, [Sample(name, tmp_path, np.zeros((96, 96), np.uint8), want)],
         [targets_from_labels(seen, config.maps)])
        for name, want, seen in (("small", small, small), ("specks", truth, specks))
    ]  # fmt: skip
    grid = dict(prob_thresholds=(0.5,), seed_thresholds=(0.7,), split_depths=(0.0,),
                min_sizes=(10, 45), min_mean_probs=(0.0,))  # fmt: skip
    chosen, table = tune.tune_across(cells, **grid)
    assert chosen["min_size"] == 45 and set(chosen) == set(tune.THRESHOLDS)
    assert table[tuple(chosen.values())] == pytest.approx([0.8, 1.0])
    alone = {
        post.min_size: result.score
        for post, result in tune.grid_results(config, cells[0][1], cells[0][2], **grid)
    }
    assert alone == pytest.approx({10: 1.0, 45: 0.8})
    ten = dict(chosen, min_size=10)
    assert table[tuple(ten.values())] == pytest.approx([1.0, 4 / 6])


def test_the_tuner_scores_the_maps_that_inference_thresholds():
    """A model trained on resized nuclei is tuned on maps of the image resized as
    ``nucleiseg predict`` and training's validation resize it: its score at its own thresholds
    is the validation's (maps of the image as it came gave another)."""
    from napari_nucleiseg.models import load_model
    from napari_nucleiseg.samples import sample_folder
    from napari_nucleiseg.training import evaluate, tune

    model, config = load_model("dsb2018-unet", device="cpu")
    config = replace(config, diameter=10.0)  # as if trained on 10-px nuclei: auto shrinks
    samples = [read_sample(sample_folder("fluorescence"))]
    _, result, default = tune.tune_postprocess(
        model, config, samples, prob_thresholds=(0.5,), seed_thresholds=(0.7,),
        split_depths=(0.0,), min_sizes=(10,), min_mean_probs=(0.0,),
    )  # fmt: skip
    validation = evaluate(model, config, samples).score
    unresized = [tune.image_maps(model, config, s.image, None, None) for s in samples]
    as_they_came = tune.score_postprocess(config, config.postprocess, samples, unresized).score
    assert default == pytest.approx(validation)
    assert abs(as_they_came - validation) > 0.05  # the resizing matters on this image


def test_the_tuner_chooses_the_mean_probability_that_drops_faint_blobs(monkeypatch, tmp_path):
    """Maps of the true nuclei (probability 1) plus faint blobs (0.75) larger than any
    area bound: of 0 and 0.9, the tuner keeps 0.9, and every nucleus."""
    from napari_nucleiseg.io import Sample
    from napari_nucleiseg.training import tune

    yy, xx = np.mgrid[:96, :96]
    truth = np.zeros((96, 96), np.uint16)
    for i, (y, x) in enumerate([(20, 20), (20, 70), (70, 20), (70, 70)], start=1):
        truth[(yy - y) ** 2 + (xx - x) ** 2 <= 100] = i
    blobs = ((yy - 46) ** 2 + (xx - 46) ** 2 <= 64) | ((yy - 6) ** 2 + (xx - 46) ** 2 <= 36)
    body = np.where(truth > 0, 1.0, np.where(blobs, 0.75, 0.0)).astype(np.float32)
    config = ModelConfig("unet", {"depth": 2, "base": 4})
    maps = np.stack([body] + [np.zeros_like(body)] * (len(config.maps) - 1))

    def predict(model, config, image, device=None, diameter="auto"):
        return maps

    monkeypatch.setattr(tune, "image_maps", predict)
    sample = Sample("s", tmp_path, np.zeros((96, 96), np.uint8), truth)
    best, result, default = tune.tune_postprocess(
        None, config, [sample], prob_thresholds=(0.5,), seed_thresholds=(0.7,),
        min_sizes=(10,), min_mean_probs=(0.0, 0.9),
    )  # fmt: skip
    assert best.min_mean_prob == 0.9 and result.score == 1.0 > default


def test_train_cli_fine_tunes_and_records_where_it_started(tmp_path, capsys):
    """`nucleiseg train`, then `--base-model` twice: each record nests its base's record."""
    from napari_nucleiseg.cli import main

    root = tmp_path / "root"
    for kind in ("fluorescence", "histology"):
        shutil.copytree(sample_folder(kind), root / sample_folder(kind).name)
    val_ids = tmp_path / "val.txt"
    val_ids.write_text(sample_folder("fluorescence").name + "  # fluorescence\n")
    quick = [
        "--epochs", "1", "--steps-per-epoch", "2", "--crop-size", "64", "--batch-size", "2",
        "--val-ids", str(val_ids), "--threads", "1",
    ]  # fmt: skip
    first, second, third = (tmp_path / f"{n}.pt" for n in ("first", "second", "third"))
    scratch = ["train", str(root), "-o", str(first), "--model", "unet", "--width", "8"]
    assert main([*scratch, "--depth", "2", *quick, "--lr", "0.01"]) == 0
    assert main(["train", str(root), "-o", str(second), "--base-model", str(first), *quick]) == 0
    tune = ["train", str(root), "-o", str(third), "--base-model", str(second)]
    more = ["--inverted-repeats", "3", "--gap-weight", "4", "--repeats", "2"]
    assert main([*tune, *quick, *more]) == 0
    _, one = load_model(first)
    _, two = load_model(second)
    _, three = load_model(third)
    assert one.training.base == {} and one.training.settings["lr"] == 0.01
    assert two.training.base["source"] == str(first)
    assert two.training.settings["lr"] == FINETUNE_LR and two.training.settings["keep_norm_stats"]
    assert two.training.settings["anchor"] == FINETUNE_ANCHOR
    # a fine-tune draws the Train dock's crops a sample; a new network one; what is given wins
    assert two.training.settings["repeats"] == FINETUNE_REPEATS != one.training.settings["repeats"]
    assert two.training.settings["epochs"] == one.training.settings["epochs"] == 1
    assert three.training.settings["repeats"] == 2
    assert two.training.base["settings"] == one.training.settings
    assert two.training.base["machine"] == one.training.machine != ""
    assert three.training.base["base"] == two.training.base  # the whole history travels
    assert three.training.settings["inverted_repeats"] == 3 and three.training.epochs == 1
    assert three.training.settings["gap_weight"] == 4 and two.training.settings["gap_weight"] == 0
    assert three.training.val_ids == [sample_folder("fluorescence").name]
    assert three.arch_kwargs == one.arch_kwargs == {"depth": 2, "base": 8}
    before = third.read_bytes()
    assert main([*tune, *quick]) == 1  # an existing checkpoint is kept
    assert "already exists" in capsys.readouterr().err and third.read_bytes() == before
    with pytest.raises(SystemExit):  # argparse: a one-line usage error, no traceback
        main([*tune, *quick, "--overwrite", "--inverted-repeats", "0"])
    assert "must be 1 or more" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*tune, *quick, "--overwrite", "--gap-weight", "-1"])
    assert "must be 0 or more" in capsys.readouterr().err
    # options that would change the base's network are an error, not silently ignored
    other = tmp_path / "other.pt"
    for option in (["--maps", "body,border"], ["--width", "12"], ["--model", "linknet"]):
        assert main([*tune, *quick, "-o", str(other), *option]) == 1
        err = capsys.readouterr().err
        assert str(second) in err and " ".join(option) in err and "would change" in err
        assert not other.exists()
    same = ["--model", "unet", "--width", "8", "--depth", "2", "--maps", "body,border,contour"]
    assert main([*tune, *quick, "-o", str(other), *same, "--channels", "grey"]) == 0


def test_a_cli_fine_tune_never_trains_on_what_its_base_excluded(tmp_path, capsys):
    """The base's excluded ids (e.g. the test split) stay excluded, as in the Train dock; the
    reference set is mixed in and scored before and after."""
    from napari_nucleiseg.cli import main
    from napari_nucleiseg.reference import kind_of, measure_samples

    root = tmp_path / "root"
    folders = [sample_folder("fluorescence"), sample_folder("histology")]
    folders += sorted((TESTS / "data" / "stage1_fixed").iterdir())
    for folder in folders:
        shutil.copytree(folder, root / folder.name)
    held = folders[-1].name
    (tmp_path / "exclude.txt").write_text(held + "\n")
    quick = ["--epochs", "1", "--steps-per-epoch", "1", "--crop-size", "64", "--batch-size", "2"]
    base, tuned = tmp_path / "base.pt", tmp_path / "tuned.pt"
    args = ["train", str(root), "--model", "unet", "--width", "4", "--depth", "2", *quick]
    assert main([*args, "-o", str(base), "--exclude-ids", str(tmp_path / "exclude.txt")]) == 0
    capsys.readouterr()
    assert main(["train", str(root), "-o", str(tuned), "--base-model", str(base), *quick]) == 0
    err = capsys.readouterr().err
    assert "on 2 samples" in err  # not 3: the held-out one stays out
    _, config = load_model(tuned)
    assert config.training.exclude_ids == [held]
    assert str(root.resolve()) in config.training.data_roots
    # by default a fine-tune mixes in the reference set and says what each kind became
    assert "mixing in 1 crops a repeat of the reference set" in err  # 30% beside 2 crops
    before, after = (config.training.scores[k] for k in ("reference_before", "reference_after"))
    assert set(before) == set(after) == {kind_of(s) for s in measure_samples()}
    for kind in before:
        assert f"  {kind}: {before[kind]:.3f} -> {after[kind]:.3f}" in err
    again = ["train", str(root), "-o", str(tuned), "--base-model", str(base), "--overwrite"]
    assert main([*again, *quick, "--replay", "0"]) == 0
    assert "mixing in" not in capsys.readouterr().err
