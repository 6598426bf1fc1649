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
from napari_nucleiseg.training import read_ids

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
    assert added == 6 and len(curated) == 20  # 6 of 20 crops: 0.3
    assert [kind_of(s) for s in curated[14:]] == [kind_of(s) for s in replay_samples()[:6]]
    many = [_sample(f"c{i}") for i in range(1000)]  # a large data set: at most 8 each
    assert add_replay(many, 0.3, lambda s: 1) == 8 * len(replay_samples())
    none = [_sample("c")]
    assert add_replay(none, 0.0, lambda s: 1) == 0 and len(none) == 1
    with pytest.raises(ValueError, match="replay share"):
        add_replay(none, 1.0, lambda s: 1)


def test_a_kind_down_by_more_than_the_tolerance_is_said():
    drop = FORGET_TOLERANCE + 0.01
    check = Forgetting({"grey": 0.50, "colour": 0.30}, {"grey": 0.50 - drop, "colour": 0.31})
    assert check.forgotten == ["grey"]
    lines = check.lines()
    assert lines[0].startswith("grey: 0.500 -> 0.470") and lines[0].endswith("(forgotten)")
    assert lines[-1].startswith("warning: 1 kind(s)") and "grey" in lines[-1]
    assert Forgetting({"grey": 0.5}, {"grey": 0.49}).lines() == ["grey: 0.500 -> 0.490"]
