"""Segment a batch of image files into outputs on disk: what ``nucleiseg predict`` and
the Segment dock's "Segment a folder" both run.

:func:`plan_batch` checks everything before the first image runs (every
input's header, every output's name, what an earlier run left) and raises a
one-line :class:`~napari_nucleiseg.errors.FileProblem` on the first problem;
:func:`run_batch` then segments with :func:`~napari_nucleiseg.pipeline.segment`,
writes each image's outputs as it goes (each file whole or not at all), and
the batch's measurement table and submission at the end.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import FileProblem, NucleisegError, one_line
from .io.atomic import (
    check_writable_folder,
    file_problem,
    partial_path,
    remove_stale,
    same_file,
)
from .io.formats import output_paths, parse_formats, write_outputs
from .io.images import (
    image_shape,
    open_lazily,
    read_image_file,
    read_intensity_image,
    read_label_image,
)
from .io.inputs import collect_images
from .io.metadata import pixel_size_for
from .io.microscope import MICROSCOPE_SUFFIXES
from .io.rle import labels_to_rles, write_submission_rows
from .measure import measure, pixel_spacing, write_table
from .pipeline import Cancelled, Progress, relay
from .preprocess import channel_problem
from .scale import Microns, in_pixels

if TYPE_CHECKING:  # the models import PyTorch
    from .models.choice import ModelChoice

MEASUREMENTS = "measurements.csv"
#: the formats written for images over LARGE_PIXELS (from labels on disk, a tile at a time)
LARGE_ONLY = frozenset({"tiff", "ome-tiff", "ome-zarr"})


@dataclass
class BatchPlan:
    """What a batch reads and writes, checked (see :func:`plan_batch`)."""

    inputs: list[tuple[str, Path]]
    output: Path
    formats: tuple[str, ...]
    targets: dict[str, dict[str, Path]]
    pixel_sizes: dict[str, tuple[float, float] | None]
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  #: from the headers
    done: set[str] = field(default_factory=set)
    table: Path | None = None
    submission: Path | None = None
    #: the run's polarity and channel over each model's normalisation (NormalizeConfig.chosen)
    choices: Mapping[str, object] | None = None

    @property
    def todo(self) -> list[tuple[str, Path]]:
        return [(i, p) for i, p in self.inputs if i not in self.done]

    @property
    def extras(self) -> list[Path]:
        return [p for p in (self.table, self.submission) if p is not None]

    @property
    def written(self) -> list[Path]:
        return [p for paths in self.targets.values() for p in paths.values()] + self.extras

    def label_file(self, image_id: str) -> Path | None:
        """The label image this batch writes for ``image_id`` (TIFF or OME-TIFF), if any."""
        paths = self.targets[image_id]
        return next((paths[f] for f in ("tiff", "ome-tiff") if f in paths), None)


@dataclass(frozen=True)
class BatchSummary:
    images: int
    nuclei: int
    done_before: int
    plan: BatchPlan
    #: the model that segmented each image of this run (with "auto", each image's own)
    models: dict[str, str] = field(default_factory=dict)


def plan_batch(
    inputs: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    formats: str | Sequence[str] = ("tiff",),
    measure_to: str | os.PathLike | None = None,
    submission: str | os.PathLike | None = None,
    pixel_size: float | None = None,
    resume: bool = False,
    overwrite: bool = False,
    how_to_replace: str = "overwrite to replace, or resume to keep the complete outputs of "
    "an earlier run",
    choices: Mapping[str, object] | None = None,
) -> BatchPlan:
    """Check a batch before it runs; nothing is written.

    Parameters
    ----------
    inputs
        Image files, folders of them, stage-1 sample folders or roots
        (:func:`~napari_nucleiseg.io.inputs.collect_images`).
    output
        The folder of the outputs, ``<id><suffix>`` per format.
    formats
        See :mod:`napari_nucleiseg.io.formats`; ``"tiff,roi"`` or a sequence.
    measure_to
        The batch's measurement CSV (one row per nucleus, an ``image`` column first).
    submission
        A Kaggle DSB2018 submission CSV.
    pixel_size
        µm per pixel for every image; None: each file's own, else pixels.
    resume
        Keep the images whose outputs all exist and redo the others (an interrupted run
        goes on).
    overwrite
        Replace existing outputs; never an input.
    how_to_replace
        What the error on an existing output tells the user to do (CLI flags, dock boxes).
    choices
        The run's polarity, channel or thresholds (``{"invert": ..., "channel": ...,
        "min_size": ...}``) over those of each image's model
        (:meth:`~napari_nucleiseg.models.ModelConfig.chosen`); None: the models' own.
        Every input must have the channel.

    Raises
    ------
    FileProblem, NucleisegError
        The first problem found, in one line naming the file.
    """
    formats = parse_formats(formats)
    found = collect_images(inputs)
    out = Path(output)
    pixel_sizes, shapes = {}, {}
    for image_id, path in found:  # a bad input is refused before the first image runs
        shapes[image_id] = image_shape(path)
        only_labels = not (measure_to or submission) and LARGE_ONLY.issuperset(formats)
        if is_large(shapes[image_id]) and not only_labels:
            h, w = shapes[image_id][:2]
            raise FileProblem(
                path,
                f"is {h}x{w}: images over {large_pixels()} pixels give label images only (formats "
                f"{', '.join(sorted(LARGE_ONLY))}); outlines, measurements and submissions of "
                "them are not made yet",
            )
        problem = channel_problem(shapes[image_id], (choices or {}).get("channel"))
        if problem:
            raise FileProblem(path, problem)
        pixel_sizes[image_id] = pixel_size_for(path, pixel_size)
        if measure_to is not None:
            try:
                pixel_spacing(pixel_sizes[image_id])
            except ValueError as exc:
                raise FileProblem(path, f"{exc}; or give a pixel size") from None
    plan = BatchPlan(
        inputs=found,
        output=out,
        formats=formats,
        targets={i: output_paths(out, i, formats) for i, _ in found},
        pixel_sizes=pixel_sizes,
        shapes=shapes,
        table=None if measure_to is None else Path(measure_to),
        submission=None if submission is None else Path(submission),
        choices=choices,
    )
    _check_outputs(plan)
    if resume:
        plan.done = {
            i for i, paths in plan.targets.items() if all(p.exists() for p in paths.values())
        }
        if plan.done and plan.extras and plan.label_file(found[0][0]) is None:
            raise NucleisegError(
                "resuming a batch with a measurement table or submission reads the earlier "
                "label images back: add tiff or ome-tiff to the formats"
            )
    # a resume keeps the complete images and redoes the others, whatever outputs of theirs
    # an interrupted run wrote; it rebuilds the table and the submission
    clash = [] if resume else [p for p in plan.written if p.exists()]
    if clash and not overwrite:
        raise FileProblem(clash[0], f"already exists; nothing was written ({how_to_replace})")
    return plan


def _check_outputs(plan: BatchPlan) -> None:
    """Refuse outputs that would replace an input or cannot be made."""
    out = plan.output
    if out.exists() and not out.is_dir():
        raise FileProblem(out, "is a file; the output (-o) takes a folder")
    sources = [path for _, path in plan.inputs]
    folders = {paths["ome-zarr"] for paths in plan.targets.values() if "ome-zarr" in paths}
    for path in plan.written:  # even overwrite never replaces an input
        if path.exists() and any(same_file(path, src) for src in sources):
            raise FileProblem(
                path, "is an input; an output would replace it (choose another output)"
            )
        if path in folders:
            if path.exists() and not path.is_dir():
                raise FileProblem(path, "is a file; an OME-Zarr output is a folder")
        elif path.is_dir():
            raise FileProblem(path, "is a folder; expected a file name")
    names: dict[str, Path] = {}
    for path in plan.written:  # e.g. a submission named as the measurement table
        key = os.path.normcase(os.path.abspath(path))
        if key in names:
            raise FileProblem(path, f"would be written twice (also as {names[key]})")
        names[key] = path
    for extra in plan.extras:
        if extra.parent != out:
            check_writable_folder(extra.parent)


@dataclass(frozen=True)
class ImageJob:
    """One image of a batch: what a process (a Dask worker too) needs to segment it."""

    image_id: str
    path: Path
    targets: dict[str, Path]
    pixel_size: tuple[float, float] | None
    measure: bool
    submission: bool
    choices: Mapping[str, object] | None = None  #: the run's polarity, channel, thresholds
    #: over :data:`~napari_nucleiseg.large.LARGE_PIXELS`: segmented in bounded memory
    large: bool = False
    #: the nuclei's, in this image's pixels; "auto": estimated; None: not resized
    diameter: float | str | None = "auto"


@dataclass(frozen=True)
class ImageResult:
    """What one image gives back to the batch; its files are already on disk."""

    image_id: str
    nuclei: int
    table: dict | None = None
    rles: list | None = None
    model: str = ""  #: the model that segmented it


def refuse_unsized(plan: BatchPlan, diameter: float | str | Microns | None) -> None:
    """Raise :class:`FileProblem` naming an image without a pixel size when ``diameter`` is in
    µm: every image needs one, and the run (or its cluster) must not start before saying so."""
    if isinstance(diameter, Microns):
        unsized = [path for image_id, path in plan.todo if plan.pixel_sizes[image_id] is None]
        if unsized:
            more = f" (and {len(unsized) - 1} more image(s))" if len(unsized) > 1 else ""
            in_pixels(diameter, None, f"{unsized[0]}{more}")  # raises, naming the image


def image_jobs(plan: BatchPlan, diameter: float | str | Microns | None = "auto") -> list[ImageJob]:
    """The images a batch still has to segment, each with ``diameter`` in its own pixels.

    Raises
    ------
    FileProblem
        ``diameter`` is in µm and an image has no pixel size (before anything is written).
    """
    refuse_unsized(plan, diameter)
    return [
        ImageJob(
            image_id,
            path,
            plan.targets[image_id],
            plan.pixel_sizes[image_id],
            measure=plan.table is not None,
            submission=plan.submission is not None,
            choices=plan.choices,
            large=is_large(plan.shapes[image_id]),
            diameter=in_pixels(diameter, plan.pixel_sizes[image_id], path),
        )  # fmt: skip
        for image_id, path in plan.todo
    ]


def prepare_output(plan: BatchPlan) -> None:
    """Create the output folder and remove what a killed run left."""
    out = plan.output
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise file_problem(out, exc, "created") from None
    check_writable_folder(out)
    for path in plan.written:
        remove_stale(path)
    for image_id, _ in plan.inputs:  # a large image's maps and labels, of a killed run
        remove_stale(plan.output / f"{image_id}.scratch")


def segment_image(
    job: ImageJob, models: ModelChoice, *, spread=None, **options
) -> Generator[Progress, None, ImageResult]:
    """Segment one image with the model chosen for it and write its outputs (each file whole
    or not at all).

    ``options`` are :func:`~napari_nucleiseg.pipeline.segment`'s ``post``, ``device``,
    ``tile_size``, ``tta`` and ``stop`` (the diameter is the job's); its progress is yielded
    as it comes.
    ``spread(path, model_name)``, for a large image: what computes its maps elsewhere
    (``segment_large``'s ``network``), None: this process.
    """
    from .pipeline import segment

    options["diameter"] = job.diameter
    if job.large:
        network = None if spread is None else partial(spread, job.path)
        return (yield from _segment_large_image(job, models, network=network, **options))
    image = read_image_file(job.path)
    name, model, config = _model_for(job, models, image)
    _, (labels,) = yield from segment(model, config, image, **options)
    table = None
    if job.measure:  # every channel of the file, where the network saw one
        table = measure(labels, _intensities(job.path, image), job.pixel_size)
    write_outputs(job.targets, labels, image=image, pixel_size=job.pixel_size, table=table)
    rles = labels_to_rles(labels) if job.submission else None
    return ImageResult(job.image_id, int(labels.max()), table, rles, name)


def _model_for(job: ImageJob, models: ModelChoice, image):
    """(name, model, config) for ``image``: its model, with the run's polarity, channel and
    thresholds over its own."""
    name, model, config = models.for_image(image)
    return name, model, config.chosen(job.choices)


def large_pixels() -> int:
    """:data:`napari_nucleiseg.large.LARGE_PIXELS`, as it is now."""
    from . import large

    return large.LARGE_PIXELS


def is_large(shape: tuple[int, ...]) -> bool:
    """Whether an image of ``shape`` is segmented in bounded memory (:mod:`.large`)."""
    return shape[0] * shape[1] > large_pixels()


def scratch_path(output: Path, image_id: str) -> Path:
    """The folder of a large image's maps and labels while it is segmented; a hidden
    :func:`~napari_nucleiseg.io.atomic.partial_path`, removed when its process is gone."""
    return partial_path(output / f"{image_id}.scratch")


def _segment_large_image(
    job: ImageJob, models: ModelChoice, network=None, **options
) -> Generator[Progress, None, ImageResult]:
    """:func:`segment_image` for an image over ``LARGE_PIXELS``: read lazily (a TIFF through
    tifffile's Zarr store), maps and labels in a scratch folder beside the outputs, each
    output written from them a tile or chunk at a time."""
    from .large import labels_array, segment_large

    image, close = open_lazily(job.path)
    scratch = scratch_path(next(iter(job.targets.values())).parent, job.image_id)
    try:
        name, model, config = _model_for(job, models, image)
        labels = labels_array(image.shape[:2], scratch)
        nuclei = yield from segment_large(
            model, config, image, labels, scratch=scratch,
            network=None if network is None else network(name), **options,
        )  # fmt: skip
        write_outputs(job.targets, labels, image=image, pixel_size=job.pixel_size)
    except (Cancelled, NucleisegError):
        raise
    except Exception as exc:  # a corrupt tile, a full disk, a GPU out of memory ...
        raise FileProblem(job.path, f"could not be segmented: {one_line(exc)}") from None
    finally:
        close()
        shutil.rmtree(scratch, ignore_errors=True)
    return ImageResult(job.image_id, nuclei, None, None, name)


def _intensities(path: Path, image: np.ndarray) -> np.ndarray:
    """The image to measure: all channels of a microscope file, else ``image`` itself (a
    multi-channel TIFF is refused as an input, so its read is already whole)."""
    return read_intensity_image(path) if path.suffix.lower() in MICROSCOPE_SUFFIXES else image


def finish_batch(plan: BatchPlan, results: dict[str, ImageResult]) -> BatchSummary:
    """Write the batch's measurement table and submission, in the inputs' order; the images
    a resumed run kept are read back."""
    sources = dict(plan.inputs)

    def earlier(image_id: str) -> np.ndarray:
        return read_label_image(plan.label_file(image_id))

    if plan.table is not None:
        tables = {i: r.table for i, r in results.items()}
        for image_id in plan.done:
            image = read_intensity_image(sources[image_id])
            tables[image_id] = measure(earlier(image_id), image, plan.pixel_sizes[image_id])
        write_table(plan.table, [(i, tables[i]) for i in plan.targets])
    if plan.submission is not None:
        rows = (
            (i, results[i].rles if i in results else labels_to_rles(earlier(i)))
            for i in plan.targets
        )
        write_submission_rows(plan.submission, rows)
    nuclei = sum(r.nuclei for r in results.values())
    models = {i: r.model for i, r in results.items()}
    return BatchSummary(len(results), nuclei, len(plan.done), plan, models)


def run_batch(
    plan: BatchPlan,
    models: ModelChoice,
    *,
    post=None,
    device=None,
    tile_size: int | None = None,
    tta: bool = False,
    stop: threading.Event | None = None,
    diameter: float | str | Microns | None = "auto",
) -> Generator[Progress, None, BatchSummary]:
    """Segment the batch's images in this process, writing each one's outputs as soon as it
    is done (:func:`napari_nucleiseg.distributed.run_batch_on_cluster` spreads them over
    a Dask cluster). Each image gets the model ``models`` chooses for it.

    ``post`` (thresholds; None: the model's own), ``device``, ``tile_size``, ``tta``,
    ``stop`` and ``diameter`` are :func:`~napari_nucleiseg.pipeline.segment`'s; a diameter
    in :class:`~napari_nucleiseg.scale.Microns` is turned into each image's pixels.

    Yields
    ------
    Progress
        Through each image (its fraction of the batch) and after it.

    Raises
    ------
    napari_nucleiseg.pipeline.Cancelled
        ``stop`` was set: the images done so far are complete on disk, the one
        running has nothing written, and a later ``resume`` goes on from there.
    """
    jobs = image_jobs(plan, diameter)
    prepare_output(plan)
    results = {}
    options = dict(post=post, device=device, tile_size=tile_size, tta=tta, stop=stop)
    for n, job in enumerate(jobs):
        where = f"{job.image_id} ({n + 1}/{len(jobs)})"
        result = results[job.image_id] = yield from relay(
            segment_image(job, models, **options),
            lambda step, n=n, where=where: Progress(
                (n + step.fraction) / len(jobs), f"{where}: {step.text}"
            ),
        )
        yield Progress((n + 1) / len(jobs), f"{where}: {result.nuclei} nuclei ({result.model})")
    return finish_batch(plan, results)
