"""``nucleiseg samples -o DIR``: copy the shipped sample folders into a folder."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from ..errors import FileProblem
from ..io.atomic import file_problem


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``samples`` sub-command to the ``nucleiseg`` sub-parsers."""
    p = sub.add_parser("samples", help="copy the shipped sample folders into a folder")
    p.add_argument("-o", "--output", required=True, help="folder to copy the samples into")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the shipped samples' folders in OUTPUT (nothing else in it)",
    )
    p.set_defaults(func=cmd_samples)
    return p


def cmd_samples(args: argparse.Namespace) -> int:
    from ..samples import SAMPLES, sample_folder

    out = Path(args.output)
    copies = {kind: (sample_folder(kind), out / sample_id) for kind, sample_id in SAMPLES.items()}
    for source, target in copies.values():
        if target.resolve() == source.resolve():  # --overwrite would delete the source
            raise FileProblem(target, "is the shipped sample itself; choose another folder")
    existing = [t for _, t in copies.values() if t.exists() or t.is_symlink()]
    if existing and not args.overwrite:
        raise FileProblem(
            existing[0], "already exists; nothing was copied (pass --overwrite to replace it)"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        for kind, (source, target) in copies.items():
            if target in existing:  # only the shipped samples' folders; the rest of DIR stays
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                else:
                    target.unlink()
            shutil.copytree(source, target)
            print(f"{kind}: {target}")
    except OSError as exc:
        raise file_problem(getattr(exc, "filename", None) or out, exc) from None
    return 0
