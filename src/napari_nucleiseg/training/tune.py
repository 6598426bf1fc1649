"""Choose post-processing thresholds on validation samples: the network runs once per image,
as inference runs it (resized to the nuclei's width the model saw), so that what is tuned is
what ``nucleiseg predict`` and the validation of training threshold."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import replace

import numpy as np

from ..devices import resolve_device
from ..inference import drain, model_device
from ..io.stage1 import Sample
from ..metrics import DatasetScore, score_dataset
from ..models import ModelConfig, SegmentationModel
from ..pipeline import labels_from_predicted, plane_maps
from ..postprocess import THRESHOLDS, PostprocessConfig, drop_objects
from ..runner import exact

#: thresholds tried by :func:`tune_postprocess`
PROB_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
SEED_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98)
#: shape-split depths tried (0: off)
SPLIT_DEPTHS = (0.0, 1.0, 2.0)
#: smallest nucleus areas (px) tried: small false positives (texture, fragments) cost more
#: than the few real nuclei that small. At most 25, so that nuclei 7 px across (38 px) are
#: kept (of 6 px, the network's objects fall near the bound): 45, chosen among 10-80,
#: deleted whole images of nuclei that small, at any diameter
MIN_SIZES = (10, 15, 20, 25)
#: smallest mean body probability of a nucleus tried (0: off): it drops texture and debris
#: that a bound on area could drop only with small nuclei
MIN_MEAN_PROBS = (0.0, 0.8, 0.85, 0.9)


def score_postprocess(
    config: ModelConfig, post: PostprocessConfig, samples: Sequence[Sample], maps: Sequence
) -> DatasetScore:
    """DSB2018 score of ``post`` on samples whose network maps are already known: only the
    post-processing runs, so many settings can be compared for one pass of the network."""
    return score_dataset(
        (s.id, s.labels, labels_from_predicted(m, config, post)) for s, m in zip(samples, maps)
    )


def image_maps(model, config: ModelConfig, image, device=None, diameter="auto") -> np.ndarray:
    """The maps (M, H, W) that segmenting ``image`` thresholds, as
    :func:`~napari_nucleiseg.training.evaluate` runs it: resized so that its nuclei are as wide
    as the model was trained to see (``diameter``, estimated by default), back at the
    image's size; in float whatever the CPU's default backend. A model trained on 20-px
    nuclei tuned on maps of images as they came chose thresholds for images it never sees."""
    dev = model_device(model) if device is None else resolve_device(device)
    with exact():
        steps = plane_maps(
            model, config, np.asarray(image), diameter=diameter, post=None, device=dev,
            tile_size=None, tta=False,
        )  # fmt: skip
        maps, _, _ = drain(steps)
    return maps


def grid_results(
    config: ModelConfig,
    samples: Sequence[Sample],
    maps: Sequence[np.ndarray],
    *,
    prob_thresholds: Sequence[float] = PROB_THRESHOLDS,
    seed_thresholds: Sequence[float] = SEED_THRESHOLDS,
    split_depths: Sequence[float] = SPLIT_DEPTHS,
    min_sizes: Sequence[int] = MIN_SIZES,
    min_mean_probs: Sequence[float] = MIN_MEAN_PROBS,
) -> Iterator[tuple[PostprocessConfig, DatasetScore]]:
    """Every threshold set of the grid (seed at or above probability) with its score on
    ``samples`` whose network ``maps`` are known: the watershed runs once per probability,
    seed and depth, and each pair of bounds only drops objects from its labels."""
    drops = list(itertools.product(sorted(min_sizes), sorted(min_mean_probs)))
    for p, q, d in itertools.product(prob_thresholds, seed_thresholds, split_depths):
        if q < p:
            continue
        candidate = replace(
            config.postprocess, prob_threshold=p, seed_threshold=q, split_depth=d,
            min_size=1, min_mean_prob=0.0,
        )  # fmt: skip
        every = [labels_from_predicted(m, config, candidate) for m in maps]  # none dropped
        for size, mean in drops:  # dropped as labels_from_maps drops them
            post = replace(candidate, min_size=size, min_mean_prob=mean)
            labels = [drop_objects(x, m[0], post) for x, m in zip(every, maps)]
            yield post, score_dataset((s.id, s.labels, x) for s, x in zip(samples, labels))


def tune_postprocess(
    model: SegmentationModel,
    config: ModelConfig,
    samples: Sequence[Sample],
    *,
    device=None,
    diameter: float | str | None = "auto",
    **grid: Sequence[float],
) -> tuple[PostprocessConfig, DatasetScore, float]:
    """The probability and seed thresholds, shape-split depth, smallest nucleus area and
    smallest mean probability with the best DSB2018 score on ``samples``, each image run
    as :func:`image_maps` runs it (``diameter``); ``grid`` narrows :func:`grid_results`'s.

    Returns
    -------
    best : PostprocessConfig
        ``config.postprocess`` with the best thresholds and depth.
    best_result : DatasetScore
        Its scores on ``samples`` (``.score``: DSB2018; per image in ``.images``),
        so that callers need not run the network again to report them.
    default_score : float
        The score of ``config.postprocess`` as it was.
    """
    maps = [image_maps(model, config, s.image, device, diameter) for s in samples]
    best, best_result = (
        config.postprocess,
        score_postprocess(config, config.postprocess, samples, maps),
    )
    default_score = best_result.score  # a float already
    for post, result in grid_results(config, samples, maps, **grid):
        if result.score > best_result.score + 1e-9:
            best, best_result = post, result
    return best, best_result, default_score


def chosen_thresholds(post: PostprocessConfig) -> dict[str, float]:
    """``post``'s thresholds that a run may set (``postprocess.THRESHOLDS``), by name."""
    return {name: getattr(post, name) for name in THRESHOLDS}


def tune_across(
    cells: Sequence[tuple[ModelConfig, Sequence[Sample], Sequence[np.ndarray]]],
    **grid: Sequence[float],
) -> tuple[dict[str, float], dict[tuple[float, ...], list[float]]]:
    """The thresholds with the best mean DSB2018 score over several models, each on its own
    samples and their maps. On leave-kind-out models scored on the kind each never saw, they
    are thresholds chosen for kinds not trained on, which a validation split of the kinds
    trained on cannot choose: there, the best of one held-out kind fell below the
    validation's choice on the other, while what the held-out kinds agree on carried.

    Returns the chosen thresholds (``PostprocessConfig.chosen`` takes them) and every
    threshold set of the grid (as :data:`THRESHOLDS`' values) with its score in each cell.
    """
    table: dict[tuple[float, ...], list[float]] = {}
    for config, samples, maps in cells:
        for post, result in grid_results(config, samples, maps, **grid):
            table.setdefault(tuple(chosen_thresholds(post).values()), []).append(result.score)
    complete = {k: v for k, v in table.items() if len(v) == len(cells)}
    best = max(complete, key=lambda k: (float(np.mean(complete[k])), k))
    return dict(zip(THRESHOLDS, best)), complete
