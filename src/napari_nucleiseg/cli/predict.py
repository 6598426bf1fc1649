"""``nucleiseg predict INPUT... -o OUTDIR``: segment images into instance-label TIFFs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import NucleisegError
from ..preprocess import CHANNEL_NAMES
from ..scale import Microns
from . import (
    add_device,
    add_pixel_size,
    number_within,
    positive_number,
    progress_bar,
    use_backend,
)

#: ``--invert`` words and the normalisation's ``invert`` each stands for
INVERT_CHOICES = {"auto": "auto", "yes": "always", "no": "never"}


def channel_choice(text: str) -> int | str:
    """``--channel``'s value: "auto", or a channel index from a number or a colour's name."""
    word = text.strip().lower()
    if word == "auto":
        return word
    if word in CHANNEL_NAMES:
        return CHANNEL_NAMES[word]
    if word.isdigit():
        return int(word)
    raise argparse.ArgumentTypeError(
        f"expected auto, a channel number (0, 1, ...) or {', '.join(CHANNEL_NAMES)}; got {text!r}"
    )


def diameter_choice(text: str) -> float | str | Microns | None:
    """``--diameter``'s value: "auto", None for "none", a number of pixels above 0, or a
    number of µm ("8um", "8µm")."""
    if text in ("auto", "none"):
        return None if text == "none" else text
    number, microns = text, False
    for unit in ("um", "µm", "μm"):  # µ as the micro sign or the Greek letter
        if text.lower().endswith(unit):
            number, microns = text[: -len(unit)].strip(), True
    try:
        value = positive_number(number)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected auto, none, a diameter in pixels above 0, or in µm (8um); got {text!r}"
        ) from None
    return Microns(value) if microns else value


#: (flag, type, help) of the thresholds a run may set: :data:`postprocess.THRESHOLDS`, as flags
THRESHOLD_FLAGS = (
    ("--prob-threshold", number_within(0, 1), "body probability above which a pixel is nucleus"),
    ("--seed-threshold", number_within(0, 1), "body x (1 - border) above which a pixel is a seed"),
    ("--min-size", number_within(0, 10**9, integer=True), "nuclei of fewer pixels are dropped"),
    ("--min-mean-prob", number_within(0, 1), "nuclei of a lower mean body probability are "
     "dropped (texture and debris the network is unsure of); 0 keeps every one"),
    ("--split-depth", number_within(0, 1000),
     "cut touching nuclei at a neck this deep (px); 0: off"),
)  # fmt: skip


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``predict`` sub-command to the ``nucleiseg`` sub-parsers."""
    p = sub.add_parser("predict", help="segment images into instance-label TIFFs")
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image files (PNG, TIFF, JPEG), folders of image files, stage-1 sample folders "
        "or roots",
    )
    p.add_argument("-o", "--output", required=True, help="folder for the outputs, named by id")
    p.add_argument(
        "--format",
        default="tiff",
        metavar="FORMATS",
        help="comma-separated outputs per image: tiff (<id>.tif labels), roi (<id>.zip, "
        "ImageJ/Fiji ROI Manager), geojson (<id>.geojson, QuPath), ome-tiff (<id>.ome.tif), "
        "ome-zarr (<id>.ome.zarr, needs the ome-zarr extra)",
    )
    p.add_argument(
        "--measure",
        action="store_true",
        help="also write OUTDIR/measurements.csv: one row per nucleus of the batch, with an "
        "image column",
    )
    add_pixel_size(p)
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="segment on a local Dask cluster of N processes (1: in this process)",
    )
    where.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="segment on a running Dask cluster (tcp://host:8786); the workers must read the "
        "inputs, the model and -o at the same paths",
    )
    p.add_argument(
        "--model",
        default="auto",
        help="shipped model name or checkpoint path; auto (the default): for each image the "
        "shipped model of its kind (monuseg-he-unet for H&E when installed, else "
        "dsb2018-unet)",
    )
    p.add_argument(
        "--diameter",
        type=diameter_choice,
        default="auto",
        metavar="auto|none|PX|UMum",
        help="the nuclei's diameter in pixels, or in µm with a unit (8um), turned into pixels "
        "by each image's pixel size (the file's, or --pixel-size): each image is resized so "
        "that the network sees them at the size it was trained on; auto (the default) "
        "estimates it per image; none: images as they are",
    )
    add_device(p)
    p.add_argument("--submission", help="also write a Kaggle DSB2018 submission CSV")
    p.add_argument(
        "--tta",
        action="store_true",
        help="average the network over 4 flips (2.5x the time on a CPU)",
    )
    p.add_argument(
        "--tile-size",
        type=int,
        help="tile side in pixels (default: the whole image up to 1536x1536, 1024 beyond); "
        "a U-Net's tiles of 208 or more give the maps of the whole image exactly",
    )
    p.add_argument(
        "--invert",
        choices=INVERT_CHOICES,
        help="whether the nuclei are dark on a bright background (brightfield, H&E): yes, "
        "no, or auto to decide per image (default: the model's, auto)",
    )
    p.add_argument(
        "--channel",
        type=channel_choice,
        metavar="auto|N|red|green|blue",
        help="segment one channel of colour images alone, as a grey image (0-based; red, "
        "green, blue are 0, 1, 2): the nuclear stain of a fluorescence composite; auto: "
        "all channels, as the model takes them (default: the model's, auto)",
    )
    thresholds = p.add_argument_group(
        "thresholds", "over each image's model's own (its card says them; default: the model's)"
    )
    for flag, kind, what in THRESHOLD_FLAGS:
        thresholds.add_argument(flag, type=kind, metavar="X", help=what)
    again = p.add_mutually_exclusive_group()
    again.add_argument(
        "--overwrite", action="store_true", help="replace existing outputs (never an input)"
    )
    again.add_argument(
        "--resume",
        action="store_true",
        help="skip the inputs whose label image exists (an interrupted run goes on)",
    )
    p.set_defaults(func=cmd_predict)
    return p


def run_choices(args: argparse.Namespace) -> dict | None:
    """``--invert``, ``--channel`` and the thresholds given, over each image's model's own
    (:meth:`~napari_nucleiseg.models.ModelConfig.chosen`); None when none is given."""
    choices = {}
    if args.invert is not None:
        choices["invert"] = INVERT_CHOICES[args.invert]
    if args.channel is not None:
        choices["channel"] = None if args.channel == "auto" else args.channel
    for flag, _, _ in THRESHOLD_FLAGS:
        name = flag[2:].replace("-", "_")
        if getattr(args, name) is not None:
            choices[name] = getattr(args, name)
    return choices or None


def cmd_predict(args: argparse.Namespace) -> int:
    from ..batch import MEASUREMENTS, plan_batch, refuse_unsized, run_batch
    from ..devices import resolve_device
    from ..inference import drain
    from ..models.choice import AUTO, ModelChoice

    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        raise NucleisegError(str(exc)) from None
    use_backend(args, device)
    if args.workers < 1:
        raise NucleisegError(f"--workers must be 1 or more, got {args.workers}")
    name = args.model
    models = ModelChoice(name, device)
    _ = models.fixed  # a bad checkpoint fails here, once
    out = Path(args.output)
    measure_to = out / MEASUREMENTS if args.measure else None
    plan = plan_batch(
        args.inputs,
        out,
        formats=args.format,
        measure_to=measure_to,
        submission=args.submission,
        pixel_size=args.pixel_size,
        resume=args.resume,
        overwrite=args.overwrite,
        how_to_replace="pass --overwrite to replace, or --resume to keep the complete "
        "outputs of an earlier run",
        choices=run_choices(args),  # every image's, every worker's
    )
    refuse_unsized(plan, args.diameter)  # before a cluster starts
    resumed = f" ({len(plan.done)} done by an earlier run)" if plan.done else ""
    client = None
    if args.scheduler or args.workers > 1:
        from distributed import Client

        from ..distributed import close_client, local_client, run_batch_on_cluster

        client = Client(args.scheduler) if args.scheduler else local_client(args.workers)
        where = f"the Dask cluster at {client.scheduler.address}"
        run = run_batch_on_cluster(
            plan, name, client, device=args.device, tile_size=args.tile_size, tta=args.tta,
            diameter=args.diameter,
        )  # fmt: skip
    else:
        where = str(device)
        run = run_batch(
            plan, models, device=device, tile_size=args.tile_size, tta=args.tta,
            diameter=args.diameter,
        )  # fmt: skip
    which = f"{name} (the shipped model of each image's kind)" if name == AUTO else name
    print(f"segmenting {len(plan.todo)} image(s){resumed} with {which} on {where}", file=sys.stderr)
    try:
        with progress_bar(len(plan.todo), "predict") as bar:
            summary = drain(run, lambda step: bar.update(step.fraction * len(plan.todo) - bar.n))
    finally:
        if client is not None:
            close_client(client)
    print(f"{summary.nuclei} nuclei in {summary.images} image(s) -> {out}", file=sys.stderr)
    for what, path in (("measurements", plan.table), ("submission", plan.submission)):
        if path is not None:
            print(f"{what}: {path}", file=sys.stderr)
    return 0
