"""``nucleiseg predict INPUT... -o OUTDIR``: segment images into instance-label TIFFs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import NucleisegError
from . import add_device, add_pixel_size, progress_bar


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
        "--model", help="shipped model name or checkpoint path (default: the best shipped)"
    )
    add_device(p)
    p.add_argument("--submission", help="also write a Kaggle DSB2018 submission CSV")
    p.add_argument(
        "--tta",
        action="store_true",
        help="average the network over 4 flips (2.5x the time on a CPU)",
    )
    p.add_argument("--tile-size", type=int, help="tile side in pixels (default: automatic)")
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


def cmd_predict(args: argparse.Namespace) -> int:
    from ..batch import MEASUREMENTS, plan_batch, run_batch
    from ..devices import resolve_device
    from ..inference import drain
    from ..models import DEFAULT_MODEL, load_model

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
    )
    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        raise NucleisegError(str(exc)) from None
    if args.workers < 1:
        raise NucleisegError(f"--workers must be 1 or more, got {args.workers}")
    name = args.model or DEFAULT_MODEL
    model, config = load_model(name, device=device)  # a bad checkpoint fails here, once
    resumed = f" ({len(plan.done)} done by an earlier run)" if plan.done else ""
    client = None
    if args.scheduler or args.workers > 1:
        from distributed import Client

        from ..distributed import close_client, local_client, run_batch_on_cluster

        client = Client(args.scheduler) if args.scheduler else local_client(args.workers)
        where = f"the Dask cluster at {client.scheduler.address}"
        run = run_batch_on_cluster(
            plan, name, client, device=args.device, tile_size=args.tile_size, tta=args.tta
        )
    else:
        where = str(device)
        run = run_batch(plan, model, config, device=device, tile_size=args.tile_size, tta=args.tta)
    print(f"segmenting {len(plan.todo)} image(s){resumed} with {name} on {where}", file=sys.stderr)
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
