"""Segment a 6144x6144 mosaic of real images in the Segment dock and save docs/segment_large.png.

Run under a display: ``xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/screenshot_large.py``.
The image is a tiled TIFF opened lazily (a Dask array over tifffile's Zarr store); it is over
4096x4096, so the dock segments it in bounded memory and shows a multiscale Labels layer read
from Zarr on disk. The view is zoomed where four source images (fluorescence crops) meet.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import dask.array as da
import napari
import numpy as np
import tifffile
import zarr
from screenshots import DEFAULT_ROOT, DOCS, click_segment, save_window  # beside this script

from napari_nucleiseg.io import list_samples
from napari_nucleiseg.io.images import png_header, read_image_file
from napari_nucleiseg.io.stage1 import image_path
from napari_nucleiseg.preprocess import should_invert

SIDE = 6144


def mosaic_tiff(path: Path) -> Path:
    """A SIDE x SIDE tiled TIFF of 512x512 crops of the 520x696 fluorescence images."""
    tiles = []
    for folder in list_samples(DEFAULT_ROOT):
        if png_header(image_path(folder))[1] == (520, 696):
            tile = read_image_file(image_path(folder))[:512, :512, 0]
            if not should_invert(tile):
                tiles.append(tile)
        if len(tiles) == 24:
            break
    n = SIDE // 512
    data = (tiles[k % len(tiles)] for k in range(n * n))
    tifffile.imwrite(path, data=data, shape=(SIDE, SIDE), dtype=np.uint8, tile=(512, 512))
    return path


def large_screenshot(out: Path = DOCS / "segment_large.png") -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        store = tifffile.imread(mosaic_tiff(Path(tmp) / "mosaic.tif"), aszarr=True)
        image = da.from_zarr(zarr.open(store, mode="r"))
        viewer = napari.Viewer(show=True)
        viewer.window._qt_window.resize(1500, 950)
        viewer.add_image(image, name="mosaic 6144x6144")
        _, dock = viewer.window.add_plugin_dock_widget("napari-nucleiseg", "Segment nuclei")
        dock._device.value = "cpu"
        click_segment(dock, seconds=1200)
        nuclei = viewer.layers["mosaic 6144x6144 nuclei"]
        nuclei.contour = 2
        viewer.camera.center = (1024, 1024)
        viewer.camera.zoom = 0.9
        print(
            f"{nuclei.name}: multiscale {nuclei.multiscale}, levels {[d.shape for d in nuclei.data]}"
        )
        path = save_window(viewer, out)
        store.close()
    return path


if __name__ == "__main__":
    print(large_screenshot())
