"""A batch spread over a Dask cluster: a local one (``nucleiseg predict --workers N``) or any
running scheduler (``--scheduler ADDRESS``: SLURM, Kubernetes ... through dask-jobqueue or
dask-kubernetes; see docs/cluster.md).

Each image is one task that calls :func:`napari_nucleiseg.batch.segment_image`, the
function the single-process batch calls: same outputs, file for file. A worker loads
the model once and keeps it; a failed task is retried, and a task that fails on every
try is named in the error, raised once the other images are written. Workers read the
inputs and write the outputs themselves: on a cluster of several machines, both must be
on a file system they share.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Generator
from functools import lru_cache
from pathlib import Path

from .batch import (
    BatchPlan,
    BatchSummary,
    ImageJob,
    ImageResult,
    finish_batch,
    image_jobs,
    prepare_output,
    segment_image,
)
from .errors import NucleisegError
from .pipeline import Cancelled, Progress
from .runner import BACKEND_VARIABLE

#: tries of a task before the batch fails, naming the image
RETRIES = 2


@lru_cache(maxsize=2)
def _worker_models(source: str, device: str):
    """The models of a worker process (each loaded on its first use and kept for the next)."""
    from .models.choice import ModelChoice

    return ModelChoice(source, device)


def segment_on_worker(
    job: ImageJob, model: str, device: str, options: dict, backend: str | None = None
) -> ImageResult:
    """The task: one image with the worker's model (``options``: thresholds, tiles, flips).
    ``device`` ("auto" too) is resolved on the worker: its GPU, not the submitter's;
    ``backend``: the submitter's choice (:mod:`napari_nucleiseg.runner`), None: the worker's."""
    from .devices import resolve_device
    from .inference import drain

    if backend is not None:
        os.environ[BACKEND_VARIABLE] = backend

    dev = str(resolve_device(device))
    return drain(segment_image(job, _worker_models(model, dev), device=dev, **options))


def local_client(workers: int):
    """A Dask client of a new cluster of ``workers`` processes on this machine, one thread
    each (PyTorch's own threads are set to 1 in Dask's workers)."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
    )
    return Client(cluster)


def close_client(client) -> None:
    """Close a client, and the local cluster it started if it did (a scheduler others run is
    left running)."""
    cluster = client.cluster  # None for a client of a running scheduler's address
    client.close()
    if cluster is not None:
        cluster.close()


def run_batch_on_cluster(
    plan: BatchPlan,
    model: str,
    client,
    *,
    device: str = "auto",
    post=None,
    tile_size: int | None = None,
    tta: bool = False,
    stop: threading.Event | None = None,
    diameter: float | str | None = "auto",
) -> Generator[Progress, None, BatchSummary]:
    """Segment a batch on the cluster of ``client``; the table and submission are written
    here when every image is done.

    Parameters
    ----------
    model : str
        A shipped name, a checkpoint path every worker can read, or "auto" (the shipped
        model for each image's kind, :mod:`napari_nucleiseg.models.choice`).

    Yields
    ------
    Progress
        After each image, in the order they finish.

    Raises
    ------
    NucleisegError
        An image failed on every try (the message names it), once every other image
        is done; no table or submission is written then.
    Cancelled
        ``stop`` was set: the tasks not started are cancelled; the images done are on disk.
    """
    from distributed import as_completed

    prepare_output(plan)
    jobs = image_jobs(plan)
    options = {"post": post, "tile_size": tile_size, "tta": tta, "diameter": diameter}
    model = str(Path(model).resolve()) if Path(model).is_file() else str(model)
    batch = uuid.uuid4().hex  # task keys unique on a scheduler other clients share
    backend = os.environ.get(BACKEND_VARIABLE)  # what this process runs on, theirs too
    futures = {
        client.submit(
            segment_on_worker, job, model, device, options, backend,
            key=f"nucleiseg-{batch}-{n}", retries=RETRIES, pure=False,
        ): job
        for n, job in enumerate(jobs)
    }  # fmt: skip
    results: dict[str, ImageResult] = {}
    failed: list[str] = []
    try:
        for n, future in enumerate(as_completed(futures), start=1):
            if stop is not None and stop.is_set():
                raise Cancelled
            job = futures[future]
            try:
                result = future.result()
            except Exception as exc:  # the others go on: their outputs are written whole
                failed.append(f"{job.path}: failed on the cluster {RETRIES + 1} times ({exc})")
                continue
            results[job.image_id] = result
            yield Progress(n / len(jobs), f"{job.image_id}: {result.nuclei} nuclei")
    except BaseException:  # cancelled or interrupted: what has not started never will
        client.cancel(list(futures))
        raise
    if failed:
        more = f" (and {len(failed) - 1} more image(s))" if len(failed) > 1 else ""
        raise NucleisegError(failed[0] + more)
    return finish_batch(plan, results)
