"""The figures the project is judged by, in one table each.

    python benchmarks/benchmark.py [--models dsb2018-linknet dsb2018-unet] [--sections ...]
        [--repeats N]

- accuracy: AP at IoU 0.5 ... 0.9 (mean over images and pooled) and the DSB2018
  score on the StarDist paper's 50 test images (original masks), beside that
  paper's Table 1; the DSB2018 score on our validation split, by kind of image.
- speed: seconds per image end to end (read the PNG, normalise, network,
  post-processing) at 256x256, 520x696 and 1024x1024 on each device here, and
  the ratio to a plain 2015-size U-Net's forward pass on the same image in the
  same run (the reference).
- stardist: the default model end to end (ONNX Runtime in int8, the default, and in float,
  then PyTorch; with its network in float and post-processing alone) against StarDist's network alone (``stardist_speed.py``, run
  by ``--stardist-python``, a side environment's Python; default ``../stardist-env``),
  in rounds that alternate the two, on the CPU: medians of the rounds, and the ratios.
- memory: peak resident memory and time for an 8192x8192 mosaic of real
  images, tiled; and seams: labels of a 2048x2048 mosaic tiled (512-pixel
  tiles) against untiled.
- split: what the shape split adds, for the default model at its shipped
  thresholds: validation and StarDist-test scores with the split off and as shipped.
- tta: the same scores, and the CPU seconds at 520x696, with and without
  test-time flips (``nucleiseg predict --tta``) for the default model.
- outputs: per image size, the seconds to measure the nuclei and to write each
  output format (ImageJ ROIs, QuPath GeoJSON, OME-TIFF, OME-Zarr), as a ratio to
  segmenting the same image in the same run.
- cluster: N stage-1 images (``--images``, default 200) segmented in one process
  and on a local Dask cluster of 2 worker processes: images per second, and
  whether the label images are identical.
Timings are medians of a few runs; compare ratios, not seconds, across machines.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

from napari_nucleiseg.devices import resolve_device
from napari_nucleiseg.inference import drain, predict_maps
from napari_nucleiseg.io import list_samples
from napari_nucleiseg.io.images import read_image_file
from napari_nucleiseg.io.stage1 import image_path
from napari_nucleiseg.metrics import score_image
from napari_nucleiseg.models import DEFAULT_MODEL, create_model, load_model, shipped_models
from napari_nucleiseg.pipeline import labels_from_predicted, segment
from napari_nucleiseg.runner import BACKEND_VARIABLE, runner
from napari_nucleiseg.training import read_ids, read_samples
from napari_nucleiseg.training.tune import score_postprocess

DATA = Path(__file__).parents[2] / "shared" / "data" / "dsb2018"
VAL_IDS = Path(__file__).parents[1] / "scripts" / "splits" / "val_ids.txt"
TABLE1 = {
    "U-Net, 2 classes (paper)": (0.674, 0.598, 0.534, 0.415, 0.203),
    "U-Net, 3 classes (paper)": (0.806, 0.743, 0.654, 0.491, 0.226),
    "Mask R-CNN (paper)": (0.832, 0.773, 0.684, 0.489, 0.189),
    "StarDist (paper)": (0.864, 0.804, 0.685, 0.450, 0.119),
}
SIZES = ((256, 256), (520, 696), (1024, 1024))


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ------------------------------------------------------------------ accuracy
def accuracy(models: list[str]) -> None:
    print("\n## Accuracy: StarDist paper test split (50 images, stage1_train masks)\n")
    print(
        "Scores as stored in each shipped model's card by scripts/ship_models.py "
        "(thresholds tuned on the validation split only).\n"
    )
    print(
        "| model | AP@0.5 | AP@0.6 | AP@0.7 | AP@0.8 | AP@0.9 | DSB2018 | validation DSB (by kind) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in models:
        _, config = load_model(name)
        s = config.training.scores
        if "stardist_test_ap" not in s:
            print(f"| {name} | (no scores in its card) |")
            continue
        for key, label in (("stardist_test_ap", "mean"), ("stardist_test_ap_pooled", "pooled")):
            ap = " | ".join(f"{v:.3f}" for v in s[key].values())
            kinds = ", ".join(f"{k} {v['dsb']:.3f}" for k, v in s["val_by_kind"].items())
            extra = (
                f"{s['stardist_test_dsb']:.3f} | {s['val_dsb']:.3f} ({kinds})"
                if label == "mean"
                else " | "
            )
            print(f"| {name} ({label} over images) | {ap} | {extra} |")
    for label, row in TABLE1.items():
        print(f"| {label} | " + " | ".join(f"{v:.3f}" for v in row) + " | | |")


# ------------------------------------------------------------------ speed
def pick_images() -> dict[tuple[int, int], Path]:
    """The first real image of each benchmark size."""
    found: dict[tuple[int, int], Path] = {}
    for folder in list_samples(DATA / "stage1_train"):
        from napari_nucleiseg.io.images import png_header

        shape = png_header(image_path(folder))[1]
        if shape in SIZES and shape not in found:
            found[shape] = image_path(folder)
        if len(found) == len(SIZES):
            break
    return found


def _forward(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> None:
    with torch.inference_mode():
        model(x)
    if x.device.type == "cuda":
        torch.cuda.synchronize()


def _end_to_end(
    model, config, path: Path, dev: torch.device, tta: bool = False, diameter=None
) -> None:
    image = read_image_file(path)
    drain(segment(model, config, image, device=dev, tta=tta, diameter=diameter))


def _timed(fn, repeats: int) -> float:
    fn()  # warm-up
    return median_time(fn, repeats)


def speed(models: list[str], devices: list[str], repeats: int) -> None:
    images = pick_images()
    print("\n## Speed: seconds per image, end to end (read, normalise, network, post-processing)\n")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; reference: a 2015 "
        "U-Net (depth 4, 64 base channels, no batch norm, 31 M parameters), forward pass only.\n"
    )
    header = " | ".join(f"{h}x{w}" for h, w in SIZES)
    print(f"| device | model | {header} | ratio to reference ({header}) |")
    print("| --- | --- | " + " | ".join(["---"] * (2 * len(SIZES))) + " |")
    for device in devices:
        dev = resolve_device(device)
        reference = (
            create_model("unet", in_channels=1, out_channels=2, depth=4, base=64, batch_norm=False)
            .to(dev)
            .eval()
        )
        ref = {
            size: _timed(
                partial(_forward, reference, torch.rand(1, 1, *pad16(size), device=dev)), repeats
            )
            for size in SIZES
        }
        ones = " | ".join("1" for _ in SIZES)
        cells = " | ".join(f"{ref[s]:.3f}" for s in SIZES)
        print(f"| {dev.type} | 2015 U-Net (reference) | {cells} | {ones} |")
        for name in models:
            model, config = load_model(name, device=dev)
            for diameter in (None, "auto"):  # not resized, and estimated (predict's default)
                t = {
                    s: _timed(
                        partial(_end_to_end, model, config, images[s], dev, diameter=diameter),
                        repeats,
                    )
                    for s in SIZES
                }
                cells = " | ".join(f"{t[s]:.3f}" for s in SIZES)
                ratios = " | ".join(f"{t[s] / ref[s]:.3f}" for s in SIZES)
                label = f"{name}, diameter {diameter or 'none'}"
                print(f"| {dev.type} | {label} | {cells} | {ratios} |")


STARDIST_SCRIPT = Path(__file__).with_name("stardist_speed.py")
STARDIST_PYTHON = Path(__file__).parents[2] / "stardist-env" / "bin" / "python"


def _stardist_times(python: Path, repeats: int) -> dict[tuple[int, int], float]:
    done = subprocess.run(
        [str(python), str(STARDIST_SCRIPT), *(f"{h}x{w}" for h, w in SIZES)],
        capture_output=True, text=True, env={**os.environ, "REPEATS": str(repeats)}, check=True,
    )  # fmt: skip
    found = json.loads(done.stdout.strip().splitlines()[-1])
    return {(h, w): found[f"{h}x{w}"] for h, w in SIZES}


def versus_stardist(name: str, python: Path, rounds: int, repeats: int) -> None:
    """Ours end to end against StarDist's network alone, alternating in rounds (this
    machine's speed drifts: only figures of one run compare)."""
    images = pick_images()
    cpu = torch.device("cpu")
    model, config = load_model(name, device=cpu)
    have_stardist = python.is_file()
    engines = ("onnxruntime-int8", "onnxruntime", "torch")
    rows = (*engines, "network", "post-processing", "stardist")
    times: dict[str, dict] = {row: {s: [] for s in SIZES} for row in rows}
    for _ in range(rounds):
        for engine in engines:
            os.environ[BACKEND_VARIABLE] = engine
            for s in SIZES:
                run = partial(_end_to_end, model, config, images[s], cpu)
                times[engine][s].append(_timed(run, repeats))
        os.environ[BACKEND_VARIABLE] = "onnxruntime"
        forward = runner(model, cpu)
        for s in SIZES:
            x = torch.rand(1, config.in_channels, *pad16(s))
            times["network"][s].append(_timed(partial(_forward, forward, x), repeats))
            maps = drain(predict_maps(model, config, read_image_file(images[s])))
            post = partial(labels_from_predicted, maps, config)
            times["post-processing"][s].append(_timed(post, repeats))
        if have_stardist:
            for s, t in _stardist_times(python, repeats).items():
                times["stardist"][s].append(t)
    os.environ.pop(BACKEND_VARIABLE, None)
    median = {
        row: {s: statistics.median(v) for s, v in by.items() if v} for row, by in times.items()
    }
    sd = median["stardist"]
    header = " | ".join(f"{h}x{w}" for h, w in SIZES)
    print(f"\n## Speed against StarDist: CPU seconds per image ({name}, {rounds} rounds)\n")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; " + (
        f"StarDist's network by {python}" if have_stardist
        else f"StarDist not timed: no side environment at {python} (see stardist_speed.py)"
    ) + "\n")  # fmt: skip
    ratio_header = f" | ratio to StarDist's network ({header})" if have_stardist else ""
    print(f"| what | {header}{ratio_header} |")
    print("| --- | " + " | ".join(["---"] * len(SIZES) * (2 if have_stardist else 1)) + " |")
    labels = {
        "onnxruntime": "ours end to end, ONNX Runtime float (--backend onnxruntime)",
        "onnxruntime-int8": "ours end to end, ONNX Runtime int8 (the default)",
        "torch": "ours end to end, PyTorch (--backend torch)",
        "network": "our network alone (ONNX Runtime float)",
        "post-processing": "our post-processing alone",
        "stardist": "StarDist's network alone (grid 2x2)",
    }
    for row in rows:
        if not median[row]:
            continue
        cells = " | ".join(f"{median[row][s]:.3f}" for s in SIZES)
        ratios = " | " + " | ".join(f"{median[row][s] / sd[s]:.2f}x" for s in SIZES) if sd else ""
        print(f"| {labels[row]} | {cells}{ratios} |")


def pad16(size: tuple[int, int]) -> tuple[int, int]:
    return tuple(-(-s // 16) * 16 for s in size)


# ------------------------------------------------------------------ memory and seams
def peak_mib() -> float:
    """This process's peak resident memory (MiB): Linux's VmHWM, which starts anew at exec;
    ru_maxrss elsewhere (on Linux it keeps the parent's high-water mark across fork and exec,
    so a child started by a parent holding 1.8 GB reported 1.8 GB before it had read a pixel)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def mosaic_tiles(n: int = 16) -> list[np.ndarray]:
    """The first ``n`` grey 1024x1024 real images (brightfield and fluorescence)."""
    from napari_nucleiseg.io.images import png_header

    tiles = []
    for folder in list_samples(DATA / "stage1_train"):
        if png_header(image_path(folder))[1] == (1024, 1024):
            tiles.append(read_image_file(image_path(folder))[..., 0])
        if len(tiles) == n:
            break
    return tiles


def mosaic(side: int) -> np.ndarray:
    """A side x side grey mosaic of the 1024x1024 real images (brightfield and fluorescence)."""
    tiles = mosaic_tiles(max(1, min(16, (side // 1024) ** 2)))
    n = side // 1024 if side >= 1024 else 1
    out = np.zeros((max(side, 1024), max(side, 1024)), np.uint8)
    for k in range(n * n):
        r, c = divmod(k, n)
        out[r * 1024 : (r + 1) * 1024, c * 1024 : (c + 1) * 1024] = tiles[k % len(tiles)]
    return out[:side, :side]


def memory_child(name: str, side: int) -> None:
    """Run in a fresh process: segment a side x side mosaic, print JSON with time and peak RSS."""
    image = mosaic(side)
    model, config = load_model(name)
    base = peak_mib()
    start = time.perf_counter()
    _, labels = drain(segment(model, config, image))
    seconds = time.perf_counter() - start
    peak = peak_mib()
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_mib": peak,
                "before_mib": base,
                "nuclei": int(labels.max()),
                "image_mib": image.nbytes / 2**20,
            }
        )
    )


def memory(name: str) -> None:
    print(f"\n## Memory and seams ({name}, CPU)\n")
    out = subprocess.run(
        [sys.executable, __file__, "--child-memory", name, "8192"],
        capture_output=True,
        text=True,
        check=True,
    )
    r = json.loads(out.stdout.strip().splitlines()[-1])
    print(
        f"- 8192x8192 image (a mosaic of real 1024x1024 images, {r['image_mib']:.0f} MiB as uint8): "
        f"{r['seconds']:.1f} s, {r['nuclei']} nuclei, peak resident memory {r['peak_mib']:.0f} MiB "
        f"({r['before_mib']:.0f} MiB before segmenting)."
    )
    image = mosaic(2048)
    model, config = load_model(name)
    _, (whole,) = drain(segment(model, config, image, tile_size=4096))
    _, (tiled,) = drain(segment(model, config, image, tile_size=512))  # the default overlap
    same = score_image(whole, tiled)
    print(
        f"- Seams: a 2048x2048 mosaic in 512-pixel tiles (the default overlap) against one piece: "
        f"{int(whole.max())} vs {int(tiled.max())} nuclei, DSB2018 score of one against the other "
        f"{same.score:.4f}, AP@0.9 {same.ap[8]:.4f}; pixels labelled alike (foreground) "
        f"{np.mean((whole > 0) == (tiled > 0)):.5f}."
    )


# ------------------------------------------------------------------ large images
def write_mosaic_tiff(path: Path, side: int) -> None:
    """A side x side tiled TIFF of the real 1024x1024 images, written a tile at a time."""
    import tifffile

    tiles = mosaic_tiles()
    n = side // 1024
    tifffile.imwrite(
        path, data=(tiles[k % len(tiles)] for k in range(n * n)), shape=(side, side),
        dtype=np.uint8, tile=(1024, 1024), bigtiff=True,
    )  # fmt: skip


def large_child(name: str, path: str, mode: str, out: str) -> None:
    """Run in a fresh process: segment the TIFF at ``path`` in bounded memory (``mode``
    "bounded": read lazily, labels to Zarr at ``out``) or whole in memory ("whole": labels
    to ``out`` as .npy); print JSON with time and peak RSS."""
    import tifffile
    import zarr

    from napari_nucleiseg.large import label_array_dtype, segment_large, zarr_array
    from napari_nucleiseg.stitch import ClumpWarning

    model, config = load_model(name)
    base = peak_mib()
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as heard:
        warnings.simplefilter("always", ClumpWarning)
        if mode == "bounded":
            store = tifffile.imread(path, aszarr=True)
            image = zarr.open(store, mode="r")
            labels = zarr_array(out, image.shape, label_array_dtype(*image.shape))
            nuclei = drain(segment_large(model, config, image, labels, scratch=Path(out).parent))
            store.close()
        else:
            image = tifffile.imread(path)
            _, (labels,) = drain(segment(model, config, image))
            nuclei = int(labels.max())
            np.save(out, labels)
    seconds = time.perf_counter() - start
    peak = peak_mib()
    notes = [str(w.message) for w in heard if issubclass(w.category, ClumpWarning)]
    print(
        json.dumps(
            {"seconds": seconds, "peak_mib": peak, "before_mib": base, "nuclei": nuclei,
             "notes": notes}
        )
    )  # fmt: skip


def _child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if out.returncode != 0:  # say why: the child's own last words
        raise SystemExit(f"{' '.join(args)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def large(name: str, sides: list[int]) -> None:
    """Huge mosaics segmented in bounded memory; at 8192 also whole in memory, in the same
    run, and the two label images compared (the same nuclei: canonical forms equal)."""
    import tempfile

    import zarr

    from napari_nucleiseg.stitch import canonical

    print(f"\n## Large images ({name}, CPU, diameter none)\n")
    print("| image | path | seconds | peak resident MiB | before MiB | nuclei |")
    print("|---|---|---|---|---|---|")
    for side in sides:
        with tempfile.TemporaryDirectory() as tmp:
            tiff = Path(tmp) / "mosaic.tif"
            write_mosaic_tiff(tiff, side)
            runs = {"bounded": _child("--child-large", name, str(tiff), "bounded", f"{tmp}/l.zarr")}
            if side <= 8192:
                runs["whole"] = _child("--child-large", name, str(tiff), "whole", f"{tmp}/l.npy")
            for mode, r in runs.items():
                print(
                    f"| {side}x{side} | {mode} | {r['seconds']:.1f} | {r['peak_mib']:.0f} | "
                    f"{r['before_mib']:.0f} | {r['nuclei']} |"
                )
            for mode, r in runs.items():  # a clump over stitch.MAX_CLUMP_PIXELS, in pieces
                for note in r.get("notes", []):
                    print(f"\n{side}x{side} {mode}: {note}")
            if "whole" in runs:
                same = np.array_equal(
                    zarr.open(f"{tmp}/l.zarr", mode="r")[:], canonical(np.load(f"{tmp}/l.npy"))
                )
                print(f"\n{side}x{side}: bounded labels equal the whole-image labels: {same}\n")


# ------------------------------------------------------------------ ablations
SCORE_COLUMNS = "validation DSB | test DSB | AP@0.5 | AP@0.7 | AP@0.9 | AP@0.5 pooled"


def _scores(val_score, test_score) -> str:
    """Table cells: validation DSB, then test DSB, AP@0.5/0.7/0.9 and pooled AP@0.5."""
    i5, i7, i9 = (test_score.thresholds.index(x) for x in (0.5, 0.7, 0.9))
    ap = test_score.ap
    return (
        f"{val_score.score:.4f} | {test_score.score:.4f} | {ap[i5]:.4f} | {ap[i7]:.4f} | "
        f"{ap[i9]:.4f} | {test_score.ap_pooled[i5]:.4f}"
    )


def ablations(name: str, sections: list[str], repeats: int) -> None:
    """What the shape split and test-time flips change for one model at its shipped thresholds:
    validation and StarDist-test scores (and, for the flips, CPU seconds at 520x696). The
    samples are read and the network run without flips once for both tables."""
    model, config = load_model(name, device="cpu")
    val = read_samples([DATA / "stage1_train_fixed" / i for i in read_ids(VAL_IDS)])
    test_ids = read_ids(DATA / "splits" / "stardist_test_ids.txt")
    test = read_samples([DATA / "stage1_train" / i for i in test_ids])

    def maps(samples, tta: bool = False) -> list[np.ndarray]:
        return [drain(predict_maps(model, config, s.image, tta=tta)) for s in samples]

    def scores(post, val_maps, test_maps) -> str:
        v = score_postprocess(config, post, val, val_maps)
        return _scores(v, score_postprocess(config, post, test, test_maps))

    plain = maps(val), maps(test)
    pp = config.postprocess
    if "split" in sections:
        print(
            f"\n## Shape split ({name}, probability {pp.prob_threshold}, seed {pp.seed_threshold})\n"
        )
        print(f"| shape split | {SCORE_COLUMNS} |")
        print("| --- " * 7 + "|")
        for depth in (0.0, pp.split_depth):
            row = scores(replace(pp, split_depth=depth), *plain)
            print(f"| {f'{depth} px' if depth else 'off'} | {row} |")
    if "tta" in sections:
        path = pick_images()[(520, 696)]
        print(f"\n## Test-time flips ({name}, its shipped thresholds, CPU)\n")
        print(f"| test-time flips | {SCORE_COLUMNS} | s at 520x696 |")
        print("| --- " * 8 + "|")
        for tta in (False, True):
            row = scores(pp, *((maps(val, True), maps(test, True)) if tta else plain))
            run = partial(_end_to_end, model, config, path, torch.device("cpu"), tta)
            print(f"| {'4 flips' if tta else 'off'} | {row} | {_timed(run, repeats):.3f} |")


# ------------------------------------------------------------------ outputs
def outputs(name: str, repeats: int) -> None:
    """What measuring and each output format cost beside segmenting, per image size."""
    import tempfile

    from napari_nucleiseg.io.formats import FORMATS, output_paths, write_outputs
    from napari_nucleiseg.measure import measure

    model, config = load_model(name, device="cpu")
    print("\n## Outputs: seconds per image, and the ratio to segmenting it (same run)\n")
    print("| size | nuclei | segment (s) | measure | " + " | ".join(FORMATS) + " |")
    print("|---|---|---|---|" + "---|" * len(FORMATS))
    with tempfile.TemporaryDirectory() as tmp:
        for size, path in pick_images().items():
            image = read_image_file(path)
            seg = _timed(partial(_end_to_end, model, config, path, torch.device("cpu")), repeats)
            _, (labels,) = drain(segment(model, config, image, device="cpu"))
            cells = [f"{seg:.3f}"]
            table = measure(labels, image, 0.5)
            cells.append(f"{_timed(partial(measure, labels, image, 0.5), repeats) / seg:.2f}x")
            for fmt in FORMATS:
                paths = output_paths(tmp, "x", [fmt])
                write = partial(write_outputs, paths, labels, image=image, pixel_size=(0.5, 0.5),
                                table=table)  # fmt: skip
                cells.append(f"{_timed(write, repeats) / seg:.2f}x")
            print(f"| {size[0]}x{size[1]} | {int(labels.max())} | " + " | ".join(cells) + " |")


# ------------------------------------------------------------------ cluster
def stage1_folders(n_images: int, spare: Path) -> list[Path]:
    """``n_images`` stage-1 folders: the 670 of the training set, then (past them) copies
    under new ids in ``spare``, their PNG linked, not copied."""
    folders = list_samples(DATA / "stage1_train")
    for k in range(n_images - len(folders)):
        source = folders[k % len(folders)]
        copy = f"{source.name}-copy{k // len(folders) + 1}"
        (spare / copy / "images").mkdir(parents=True)
        (spare / copy / "images" / f"{copy}.png").symlink_to(
            source / "images" / f"{source.name}.png"
        )
        folders.append(spare / copy)
    return folders[:n_images]


def cluster(name: str, n_images: int) -> None:
    """One process against a local Dask cluster of 2 workers on the same images."""
    import tempfile

    from napari_nucleiseg.batch import plan_batch, run_batch
    from napari_nucleiseg.distributed import close_client, local_client, run_batch_on_cluster
    from napari_nucleiseg.io.images import read_label_image
    from napari_nucleiseg.models.choice import ModelChoice

    models = ModelChoice(name, "cpu")
    _ = models.fixed  # loaded before the clock starts
    with tempfile.TemporaryDirectory() as tmp:
        folders = stage1_folders(n_images, Path(tmp) / "input")
        print(f"\n## Cluster: {len(folders)} stage-1 images, one process against 2 Dask workers\n")
        print("| run | seconds | images/s | ratio |")
        print("|---|---|---|---|")
        one, two = Path(tmp) / "one", Path(tmp) / "two"
        start = time.perf_counter()
        drain(run_batch(plan_batch(folders, one), models, device="cpu"))
        single = time.perf_counter() - start
        print(f"| 1 process | {single:.1f} | {len(folders) / single:.2f} | 1.00x |")
        start = time.perf_counter()
        client = local_client(2)
        try:
            drain(run_batch_on_cluster(plan_batch(folders, two), name, client))
        finally:
            close_client(client)
        spread = time.perf_counter() - start
        print(
            f"| LocalCluster, 2 workers (start included) | {spread:.1f} | "
            f"{len(folders) / spread:.2f} | {single / spread:.2f}x |"
        )
        same = all(
            np.array_equal(read_label_image(p), read_label_image(two / p.name))
            for p in sorted(one.glob("*.tif"))
        )
        print(f"\nlabel images identical: {same} ({len(list(one.glob('*.tif')))} images)")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child-memory":
        memory_child(sys.argv[2], int(sys.argv[3]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--child-large":
        large_child(*sys.argv[2:6])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=None, help="shipped names or checkpoints")
    parser.add_argument(
        "--sections",
        nargs="+",
        default=["accuracy", "split", "tta", "speed", "stardist", "memory", "outputs", "cluster"],
        choices=[
            "accuracy", "split", "tta", "speed", "stardist", "memory", "large", "outputs",
            "cluster",
        ],
    )  # fmt: skip
    parser.add_argument(
        "--stardist-python",
        type=Path,
        default=STARDIST_PYTHON,
        help="Python of a side environment with stardist and tensorflow-cpu",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the stardist section")
    parser.add_argument(
        "--large-sides",
        type=int,
        nargs="+",
        default=[8192, 32768],
        help="sides of the large section",
    )
    parser.add_argument("--images", type=int, default=200, help="images of the cluster section")
    parser.add_argument(
        "--devices", nargs="+", default=None, help="default: cpu, and cuda/mps if present"
    )
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    models = args.models or shipped_models()
    if not models:
        raise SystemExit("no shipped model yet: pass --models CHECKPOINT ...")
    devices = args.devices or ["cpu"] + [
        d for d in ("cuda", "mps") if resolve_device("auto").type == d
    ]
    if "accuracy" in args.sections:
        accuracy(models)
    if {"split", "tta"} & set(args.sections):
        ablations(
            DEFAULT_MODEL if DEFAULT_MODEL in models else models[0], args.sections, args.repeats
        )
    if "speed" in args.sections:
        speed(models, devices, args.repeats)
    if "stardist" in args.sections:
        versus_stardist(
            DEFAULT_MODEL if DEFAULT_MODEL in models else models[0],
            args.stardist_python, args.rounds, args.repeats,
        )  # fmt: skip
    if "memory" in args.sections:
        memory(DEFAULT_MODEL if DEFAULT_MODEL in models else models[0])
    if "large" in args.sections:
        large(DEFAULT_MODEL if DEFAULT_MODEL in models else models[0], args.large_sides)
    if "outputs" in args.sections:
        outputs(DEFAULT_MODEL if DEFAULT_MODEL in models else models[0], args.repeats)
    if "cluster" in args.sections:
        cluster(DEFAULT_MODEL if DEFAULT_MODEL in models else models[0], args.images)


if __name__ == "__main__":
    main()
