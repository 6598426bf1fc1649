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
from functools import lru_cache, partial
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
from .runner import BACKEND_VARIABLE, asked_backend
from .scale import Microns

#: tries of a task before the batch fails, naming the image
RETRIES = 2
#: rows of a large image's maps one task computes at least (whole chunks): the tiles that
#: reach two tasks' rows are computed twice (at 32768 rows, 46 rows of tiles for 40)
MIN_TASK_ROWS = 4096


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

    _use_backend(backend)

    dev = str(resolve_device(device))
    spread = partial(
        rows_on_cluster, device=device, tile_size=options.get("tile_size"),
        tta=options.get("tta", False), backend=backend,
    )  # fmt: skip
    return drain(
        segment_image(job, _worker_models(model, dev), device=dev, spread=spread, **options)
    )


def rows_on_cluster(
    path: Path, name: str, *, device: str, tile_size: int | None, tta: bool, backend: str | None
):
    """The maps of one large image computed by the cluster's workers: ``segment_large``'s
    ``network``, for the task that segments the image (it runs on a worker and waits for
    the others without holding its thread). Each task computes whole chunks of rows (about
    two tasks a worker thread, of at least :data:`MIN_TASK_ROWS`), with the tiles that reach
    them: the maps of one process, value for value; the labels are then made by the
    image's task."""

    def network(factor: float, scaling, maps_folder: Path, chunk: int):
        import zarr
        from distributed import as_completed, worker_client

        height = zarr.open_array(str(maps_folder), mode="r").shape[1]
        with worker_client() as client:
            threads = max(sum(client.nthreads().values()), 1)
            step = max(-(-height // (2 * threads * chunk)) * chunk, MIN_TASK_ROWS)
            blocks = [(top, min(top + step, height)) for top in range(0, height, step)]
            futures = [
                client.submit(
                    maps_rows_on_worker, path, name, device, factor, scaling, maps_folder,
                    block, tile_size, tta, backend, retries=RETRIES, pure=False,
                )
                for block in blocks
            ]  # fmt: skip
            try:
                for done, future in enumerate(as_completed(futures), start=1):
                    future.result()  # a block that failed on every try fails the image
                    yield done, len(blocks)
            finally:  # failed or stopped: no block may write into maps about to be removed
                client.cancel(futures)

    return network


def maps_rows_on_worker(
    path: Path,
    name: str,
    device: str,
    factor: float,
    scaling,
    maps_folder: Path,
    rows: tuple[int, int],
    tile_size: int | None,
    tta: bool,
    backend: str | None,
) -> None:
    """The task: rows ``rows`` of one large image's maps, into its Zarr maps (whole chunks
    of rows, so that no two tasks write one chunk), the image opened here lazily and
    resized by ``factor`` as ``segment_large`` resizes it."""
    import zarr

    from . import scale
    from .devices import resolve_device
    from .inference import drain, predict_into
    from .io.images import open_lazily

    _use_backend(backend)
    dev = str(resolve_device(device))
    model, _ = _worker_models(name, dev).load(name)
    image, close = open_lazily(path)
    try:
        maps = zarr.open_array(str(maps_folder), mode="r+")
        seen = scale.resized_view(image, factor)
        drain(
            predict_into(
                model,
                scaling,
                seen,
                maps,
                device=dev,
                tile_size=tile_size,
                batch_size=1,
                tta=tta,
                rows=rows,
            )  # fmt: skip
        )
    finally:
        close()


def _use_backend(backend: str | None) -> None:
    """A task's backend: the submitter's (None: the worker's own)."""
    if backend is not None:
        os.environ[BACKEND_VARIABLE] = backend


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
    diameter: float | str | Microns | None = "auto",
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

    jobs = image_jobs(plan, diameter)
    prepare_output(plan)
    options = {"post": post, "tile_size": tile_size, "tta": tta}
    model = str(Path(model).resolve()) if Path(model).is_file() else str(model)
    batch = uuid.uuid4().hex  # task keys unique on a scheduler other clients share
    backend = asked_backend()  # this process's choice, theirs too
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
