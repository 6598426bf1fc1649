"""A batch on a Dask cluster (issue 16): a real LocalCluster of worker processes gives the
outputs of the single-process batch, file for file; a failing image is retried and named."""

from __future__ import annotations

import pytest
import tifffile

from napari_nucleiseg.batch import image_jobs, plan_batch
from napari_nucleiseg.cli import main
from napari_nucleiseg.distributed import RETRIES, close_client, local_client, run_batch_on_cluster
from napari_nucleiseg.errors import NucleisegError
from napari_nucleiseg.inference import drain

FORMATS = "tiff,roi,geojson,ome-tiff"


@pytest.fixture(scope="module")
def client():
    client = local_client(2)
    yield client
    close_client(client)


def files(folder):
    """Every file's bytes; an OME-TIFF's pixels and pixel size (its OME-XML holds a new UUID
    at every write)."""
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.name.endswith(".ome.tif"):
            with tifffile.TiffFile(path) as tif:
                out[path.relative_to(folder)] = (
                    tif.asarray().tobytes(),
                    tif.ome_metadata.count("PhysicalSize"),
                )
        else:
            out[path.relative_to(folder)] = path.read_bytes()
    return out


def test_a_local_cluster_writes_what_one_process_writes(
    capsys, tmp_path, small_root, tiny_checkpoint
):
    common = [small_root, "--model", tiny_checkpoint, "--format", FORMATS, "--measure"]
    assert main(["predict", *map(str, common), "-o", str(tmp_path / "one")]) == 0
    args = [*map(str, common), "-o", str(tmp_path / "two"), "--workers", "2"]
    assert main(["predict", *args]) == 0
    err = capsys.readouterr().err
    assert "on the Dask cluster at tcp://" in err
    one, two = files(tmp_path / "one"), files(tmp_path / "two")
    assert len(one) == 4 * len(list(small_root.iterdir())) + 1  # four formats, one table
    assert one == two  # byte for byte: labels, ROIs, GeoJSON, the table; OME-TIFF pixels


def test_a_failing_image_is_retried_then_named(tmp_path, small_root, tiny_checkpoint, client):
    plan = plan_batch([small_root], tmp_path / "out", formats="tiff")
    broken = plan.inputs[1][1]
    broken.write_bytes(b"not a PNG any more")  # after the check: it fails on the worker
    run = run_batch_on_cluster(plan, str(tiny_checkpoint), client)
    with pytest.raises(
        NucleisegError, match=f"{broken}: failed on the cluster {RETRIES + 1} times"
    ):
        drain(run)
    out = tmp_path / "out"  # the other images were finished first, whole
    assert not list(out.glob(".*partial"))
    others = sorted(i for i, _ in plan.inputs if i != plan.inputs[1][0])
    assert sorted(p.stem for p in out.glob("*.tif")) == others


def test_one_large_image_is_spread_over_the_workers_with_the_labels_of_one_process(
    tmp_path, client, monkeypatch
):
    """A large image on the cluster: its rows of maps are tasks of their own (counted in the
    scheduler's task stream), and its labels are the ones a single process writes, nucleus
    for nucleus, diameter estimated and image resized."""
    import numpy as np
    import torch
    from distributed import get_task_stream
    from test_large import mosaic

    from napari_nucleiseg import large
    from napari_nucleiseg.batch import run_batch
    from napari_nucleiseg.models.choice import ModelChoice

    monkeypatch.setattr(large, "LARGE_PIXELS", 10**5)
    image = np.concatenate([mosaic(False), mosaic(False)[::-1]] * 3)[:, :600]  # 4200x600
    path = tmp_path / "tall.tif"
    tifffile.imwrite(path, image, tile=(256, 256))
    one = plan_batch([path], tmp_path / "one", formats="tiff")
    assert image_jobs(one)[0].large
    cpu = torch.device("cpu")
    drain(run_batch(one, ModelChoice("dsb2018-unet", cpu), device=cpu))
    two = plan_batch([path], tmp_path / "two", formats="tiff")
    with get_task_stream(client) as stream:
        drain(run_batch_on_cluster(two, "dsb2018-unet", client, device="cpu"))
    rows = [t for t in stream.data if "maps_rows_on_worker" in str(t["key"])]
    assert len(rows) == 2  # rows 0-4095 and 4096-4199 (MIN_TASK_ROWS); any worker runs them
    expected = tifffile.imread(tmp_path / "one" / "tall.tif")
    assert expected.max() > 100
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "two" / "tall.tif"), expected)
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["tall.tif"]
