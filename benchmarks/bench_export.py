"""Export N real samples as curated stage-1 training data, and that root as a TIFF layout.

    python benchmarks/bench_export.py [ROOT] [-n 100]
    python benchmarks/bench_export.py --race 20 [--repeats 20] [--pythonpath DIR]

Reading is timed apart from writing; the exports go to a temporary folder.

``--race N`` instead starts N ``nucleiseg export`` processes at once into one
root, ``--repeats`` times for each case (N different ids; N of one id; N of
one id with ``--new-version``; N with ``--overwrite``), and prints what was
kept: exports that succeeded, complete sample folders, manifest entries, and
``.export-*`` leftovers. ``--pythonpath`` puts another copy of the package
(e.g. an older ``src/``) first on the racing processes' path, for a before/after.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from napari_nucleiseg.io import list_samples, read_sample
from napari_nucleiseg.io.export import export_sample
from napari_nucleiseg.io.images import write_label_tiff
from napari_nucleiseg.io.manifest import read_manifest
from napari_nucleiseg.io.tiff_layout import export_tiff_layout
from napari_nucleiseg.samples import sample_folder

DEFAULT_ROOT = Path(__file__).parents[2] / "shared" / "data" / "dsb2018" / "stage1_train"
#: case -> the options of every racer (``{i}`` is the racer's number)
CASES = {
    "different ids": ["--id", "r{i}"],
    "one id": ["--id", "same"],
    "one id, --new-version": ["--id", "same", "--new-version"],
    "one id, --overwrite": ["--id", "same", "--overwrite"],
}


def speed(root: Path, n: int) -> None:
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        samples = [read_sample(f) for f in list_samples(root)[:n]]
    t_read = time.perf_counter() - start
    nuclei = sum(len(s.mask_names) for s in samples)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "curated"
        out.mkdir()
        start = time.perf_counter()
        for s in samples:
            export_sample(
                out,
                s.id,
                s.image,
                s.labels,
                original=s.labels,
                mask_names=s.mask_names,
                source=s.path,
            )
        t_export = time.perf_counter() - start
        start = time.perf_counter()
        export_tiff_layout(out, Path(tmp) / "tiff")
        t_tiff = time.perf_counter() - start
    print(f"{len(samples)} samples, {nuclei} nuclei from {root}")
    print(f"read:        {t_read:6.2f} s")
    print(f"export:      {t_export:6.2f} s ({t_export / len(samples) * 1000:.0f} ms per sample)")
    print(f"TIFF layout: {t_tiff:6.2f} s")


def race_round(root: Path, inputs: list[Path], options: list[str], n: int, env) -> dict:
    """N exports started at once into ``root``; the counts of what survived."""
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "napari_nucleiseg.cli",
                "export",
                *map(str, inputs),
                "-o",
                str(root),
                *(o.format(i=i) for o in options),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(n)
    ]
    errors = [p.communicate()[1] for p in procs]  # (wait() could block on a full pipe)
    results = [(p.returncode, e) for p, e in zip(procs, errors)]
    manifest = read_manifest(root)
    folders = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    complete = [
        p
        for p in folders
        if (p / "images" / f"{p.name}.png").is_file()
        and len(list((p / "masks").iterdir())) == manifest.get(p.name, {}).get("nuclei")
    ]
    return {
        "exit 0": sum(code == 0 for code, _ in results),
        "refused": sum(code == 1 and "already exists" in err for code, err in results),
        "other errors": sum(code != 0 and "already exists" not in err for code, err in results),
        "samples": len(folders),
        "entries": len(manifest),
        "consistent": len(complete),
        "leftovers": len(list(root.glob(".export-*"))),
    }


def race(n: int, repeats: int, pythonpath: Path | None) -> None:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), env.get("PYTHONPATH", "")])
    sample = read_sample(sample_folder("fluorescence"))
    print(
        f"{n} concurrent exports into one root, {repeats} times per case "
        f"({'package from ' + str(pythonpath) if pythonpath else 'this package'}); "
        "sums over the repeats; consistent = complete folder with its manifest entry"
    )
    print()
    columns = ["exit 0", "refused", "other errors", "samples", "entries", "consistent", "leftovers"]
    print("| case | " + " | ".join(columns) + " |")
    print("| --- " * (len(columns) + 1) + "|")
    with tempfile.TemporaryDirectory() as tmp:
        inputs = [
            sample.path / "images" / f"{sample.id}.png",
            write_label_tiff(Path(tmp) / "labels.tif", sample.labels),
        ]
        for case, options in CASES.items():
            totals = dict.fromkeys(columns, 0)
            for r in range(repeats):
                counts = race_round(Path(tmp) / f"{case}-{r}", inputs, options, n, env)
                totals = {k: totals[k] + counts[k] for k in columns}
            print(f"| {case} | " + " | ".join(str(totals[k]) for k in columns) + " |", flush=True)
    print()
    print(
        f"expected: different ids and --new-version keep {n * repeats} of each; one id: "
        f"{repeats} exit 0, {(n - 1) * repeats} refused, {repeats} samples; --overwrite: "
        f"{n * repeats} exit 0, {repeats} samples; no leftovers, no other errors"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default=DEFAULT_ROOT, type=Path)
    parser.add_argument("-n", type=int, default=100)
    parser.add_argument("--race", type=int, metavar="N", help="concurrent exports per round")
    parser.add_argument("--repeats", type=int, default=20, help="rounds per --race case")
    parser.add_argument("--pythonpath", type=Path, help="the package the racers import")
    args = parser.parse_args()
    if args.race:
        race(args.race, args.repeats, args.pythonpath)
    else:
        speed(args.root, args.n)


if __name__ == "__main__":
    main()
