"""A batch on a Dask cluster (issue 16): a real LocalCluster of worker processes gives the
outputs of the single-process batch, file for file; a failing image is retried and named."""

from __future__ import annotations

import pytest
import tifffile

from napari_nucleiseg.batch import plan_batch
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
