"""DSB2018 score and AP@0.5 of models on held-out kinds of image (leave-kind-out validation).

Each ``--root NAME=PATH`` is a stage-1 root or an ``images/`` + ``masks/`` root
(several paths joined with ``+`` make one set). Every model is run through the
one pipeline (:func:`napari_nucleiseg.pipeline.segment`) with the nucleus
diameter estimated (``auto``, as ``nucleiseg predict`` does) and, for
comparison, not resized (``none``); ``--exclude-ids`` leaves ids out (the
training split of a set). ``--min-sizes 10,30,60`` (with ``--diameter none``) scores each
model at each smallest nucleus area in place of its own, ``--min-mean-probs 0,0.8,0.9`` at each
smallest mean probability (with any diameter); the network runs once per image.
``--magnify 0.5,1,2,3`` scores each set as microscopes of other magnifications would show it
(images and masks resized), which is how other labs' images differ most from the training
set's.

    python benchmarks/bench_generalisation.py --model dsb2018-unet \\
        --root monuseg-val=../shared/data/monuseg2018 --ids scripts/splits/monuseg_val.txt
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
import warnings
from dataclasses import replace

import numpy as np

from napari_nucleiseg.devices import resolve_device
from napari_nucleiseg.inference import drain
from napari_nucleiseg.io import OverlapWarning
from napari_nucleiseg.io.paired import sample_id
from napari_nucleiseg.metrics import score_dataset
from napari_nucleiseg.models import load_model
from napari_nucleiseg.pipeline import estimate_diameter, segment
from napari_nucleiseg.postprocess import drop_objects
from napari_nucleiseg.scale import resize_image
from napari_nucleiseg.training import find_samples, read_ids, read_samples


def score(model, config, samples, device, diameter, min_sizes=None, min_mean_probs=None):
    """{(min_size, min_mean_prob): scores}: the model's own bounds (None), or each of
    ``min_sizes`` and ``min_mean_probs`` in their place (the network runs once per image)."""
    sizes, means = sorted(min_sizes or [None]), sorted(min_mean_probs or [None])
    post = config.postprocess
    if sizes != [None]:
        post = replace(post, min_size=1)
    if means != [None]:
        post = replace(post, min_mean_prob=0.0)
    runs = []
    for s in samples:
        told = diameter
        if diameter == "auto" and means != [None]:  # the size auto finds at the model's bounds
            told = estimate_diameter(model, config, s.image, device=device)
        maps, (labels,) = drain(
            segment(model, config, s.image, device=device, diameter=told, post=post)
        )
        runs.append((s.id, s.labels, labels, maps[0][0]))
    rows = {}
    for size, mean in itertools.product(sizes, means):  # as post-processing drops them
        bounds = replace(
            post,
            min_size=post.min_size if size is None else size,
            min_mean_prob=post.min_mean_prob if mean is None else mean,
        )
        kept = [(i, t, drop_objects(x, body, bounds)) for i, t, x, body in runs]
        result = score_dataset(kept).as_dict()
        rows[size, mean] = {"dsb": result["score"], "ap50": result["ap"]["0.50"], "n": len(samples)}
    return rows


def magnified(samples, factor: float):
    """``samples`` as seen at ``factor`` times the magnification: images resized bilinear
    (anti-aliased when shrinking), masks by nearest label; nuclei that vanish leave the truth."""
    from skimage.transform import resize

    if factor == 1:
        return samples
    out = []
    for s in samples:
        image = resize_image(s.image, factor)  # float32 in the image's own range
        if np.issubdtype(s.image.dtype, np.integer):
            bounds = np.iinfo(s.image.dtype)
            image = np.clip(np.rint(image), bounds.min, bounds.max).astype(s.image.dtype)
        labels = resize(
            s.labels, image.shape[:2], order=0, preserve_range=True, anti_aliasing=False
        ).astype(s.labels.dtype)
        out.append(replace(s, image=image, labels=labels))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", required=True, help="NAME=CHECKPOINT or a name")
    p.add_argument("--root", action="append", required=True, help="NAME=PATH[+PATH...]")
    p.add_argument("--ids", help="score only these ids")
    p.add_argument("--diameter", default="auto,none", help="auto, none or both (auto,none)")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", help="also write the results here")
    p.add_argument(
        "--magnify", type=lambda t: [float(v) for v in t.split(",")], default=[1.0],
        help="score each set at these magnifications too (images and masks resized)",
    )  # fmt: skip
    p.add_argument(
        "--min-sizes", type=lambda t: [int(v) for v in t.split(",")],
        help="smallest nucleus areas (px) to score each model at, in place of its own",
    )  # fmt: skip
    p.add_argument(
        "--min-mean-probs", type=lambda t: [float(v) for v in t.split(",")],
        help="smallest mean probabilities of a nucleus to score each model at, in place of "
        "its own (with any --diameter; auto's size is the one it finds at the model's own)",
    )  # fmt: skip
    args = p.parse_args()
    if args.min_sizes and args.diameter != "none":
        p.error("--min-sizes needs --diameter none: the area also shapes auto's estimate")
    warnings.simplefilter("ignore", OverlapWarning)
    device = resolve_device(args.device)
    only = set(read_ids(args.ids)) if args.ids else None
    sets = {}
    for item in args.root:
        name, paths = item.split("=", 1)
        found = find_samples(paths.split("+"))
        samples = read_samples([f for f in found if only is None or sample_id(f) in only])
        for factor in args.magnify:
            sets[name if factor == 1 else f"{name}@{factor:g}x"] = magnified(samples, factor)
    results = []
    for item in args.model:
        name, _, path = item.rpartition("=")
        model, config = load_model(path, device=device)
        for set_name, samples in sets.items():
            for diameter in args.diameter.split(","):
                started = time.perf_counter()
                rows = score(
                    model, config, samples, device, None if diameter == "none" else diameter,
                    args.min_sizes, args.min_mean_probs,
                )  # fmt: skip
                seconds = round(time.perf_counter() - started, 1)
                own = config.postprocess
                for (size, mean), row in rows.items():
                    row |= {"model": name or path, "set": set_name, "diameter": diameter}
                    row |= {"min_size": size or own.min_size, "seconds": seconds}
                    row["min_mean_prob"] = own.min_mean_prob if mean is None else mean
                    results.append(row)
                    print(
                        f"{row['model']:<24} {set_name:<28} {diameter:<5} n={row['n']:<4} "
                        f"min {row['min_size']:<4} mean {row['min_mean_prob']:<4} "
                        f"DSB {row['dsb']:.4f}  "
                        f"AP@0.5 {row['ap50']:.4f}  ({seconds} s)",
                        flush=True,
                    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
