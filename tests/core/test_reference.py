"""The shipped reference set: replay against forgetting, and the kinds a fine-tune is scored on."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from napari_nucleiseg.io import Sample
from napari_nucleiseg.reference import (
    FORGET_TOLERANCE,
    Forgetting,
    add_replay,
    kind_of,
    measure_samples,
    replay_samples,
    without_measured,
)
from napari_nucleiseg.training import CropDataset, read_ids
from napari_nucleiseg.training.dataset import Pool

SPLITS = Path(__file__).parents[2] / "scripts" / "splits"


def test_the_set_holds_two_real_crops_per_kind_apart_from_the_test_and_validation_splits():
    replay, measured = replay_samples(), measure_samples()
    kinds = Counter(kind_of(s) for s in replay)
    assert kinds == Counter(kind_of(s) for s in measured) and set(kinds.values()) == {2}
    assert len(kinds) >= 5 and any("colour-bright" in k for k in kinds)
    assert not {s.id for s in replay} & {s.id for s in measured}
    held = set(read_ids(SPLITS / "exclude_ids.txt")) | set(read_ids(SPLITS / "val_ids.txt"))
    for sample in replay + measured:
        assert sample.image.shape[:2] == sample.labels.shape == (256, 256)
        assert sample.labels.max() >= 3  # nuclei to learn and score
        assert not any(i.startswith(sample.id.split("--")[1]) for i in held)


def test_measured_images_never_train():
    measured = measure_samples()[0].id.split("--")[1]
    folders = [Path(f"/data/{measured}{'0' * 52}"), Path("/data/another")]
    assert without_measured(folders) == [Path("/data/another")]


def _sample(name: str, side: int = 64) -> Sample:
    return Sample(
        name, Path(name), np.zeros((side, side), np.uint8), np.zeros((side, side), np.uint16)
    )


def test_replay_makes_its_share_of_the_crops():
    curated = [_sample(f"c{i}") for i in range(14)]
    added = add_replay(curated, 0.3, lambda s: 1)
    assert added == 6 and len(curated) == 15  # 6 of 20 crops: 0.3
    pool = curated[14]
    assert isinstance(pool, Pool) and pool.crops == 6
    assert [s.id for s in pool.samples] == [s.id for s in replay_samples()]
    many = [_sample(f"c{i}") for i in range(1000)]  # a large data set: at most 8 each
    assert add_replay(many, 0.3, lambda s: 1) == 8 * len(replay_samples())
    none = [_sample("c")]
    assert add_replay(none, 0.0, lambda s: 1) == 0 and len(none) == 1
    with pytest.raises(ValueError, match="replay share"):
        add_replay(none, 1.0, lambda s: 1)


def test_a_few_replay_crops_visit_every_replay_sample_in_turn():
    """8 curated tiles at share 0.3 give 3 replay crops a repeat, fewer than the set's 12
    crops of 6 kinds: they take the whole set in turn, so 4 epochs replay each crop once (the
    first 3 crops, always, once let the other kinds be forgotten)."""
    curated = [_sample(f"c{i}") for i in range(8)]
    assert add_replay(curated, 0.3, lambda s: 1) == 3
    data = CropDataset(curated, crop_size=32)
    assert len(data) == 11
    n = len(replay_samples())
    drawn = []
    for epoch in range(1, n // 3 + 1):  # as the trainer counts them
        data.set_epoch(epoch)
        sources = [data.source(i) for i in range(len(data))]
        assert sources[:8] == list(range(8))
        drawn += sources[8:]
    assert sorted(drawn) == list(range(8, 8 + n))  # each replay crop once
    image, targets = data[10]  # a replay crop, as any other
    assert image.shape[-2:] == targets.shape[-2:] == (32, 32)
    twice = CropDataset(curated, crop_size=32, repeats=2)  # the second repeat goes on in turn
    assert len({twice.source(i) for i in range(22) if i % 11 >= 8}) == 6


def test_a_kind_down_by_more_than_the_tolerance_is_said():
    drop = FORGET_TOLERANCE + 0.01
    check = Forgetting({"grey": 0.50, "colour": 0.30}, {"grey": 0.50 - drop, "colour": 0.31})
    assert check.forgotten == ["grey"]
    lines = check.lines()
    assert lines[0].startswith("grey: 0.500 -> 0.470") and lines[0].endswith("(forgotten)")
    assert lines[-1].startswith("warning: 1 kind(s)") and "grey" in lines[-1]
    assert Forgetting({"grey": 0.5}, {"grey": 0.49}).lines() == ["grey: 0.500 -> 0.490"]
