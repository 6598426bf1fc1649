"""``nucleiseg check ROOT``: validate a stage-1 root or sample folder."""

from __future__ import annotations

import argparse
import sys

from ..errors import FileProblem
from ..io import stage1


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``check`` sub-command to the ``nucleiseg`` sub-parsers."""
    p = sub.add_parser("check", help="validate a stage-1 root or sample folder")
    p.add_argument("root", help="a stage-1 root (folder of samples) or one sample folder")
    p.add_argument(
        "--strict",
        action="store_true",
        help="fail on warnings too (e.g. overlapping masks, an empty masks/ folder)",
    )
    p.set_defaults(func=cmd_check)
    return p


def cmd_check(args: argparse.Namespace) -> int:
    problems = stage1.check(args.root)
    errors = [p for p in problems if p.severity == "error"]
    for p in problems:
        print(p)
    try:
        n = len(stage1.folders_to_check(args.root))
    except FileProblem:
        n = 0
    print(
        f"{n} sample(s) checked: {len(errors)} error(s), {len(problems) - len(errors)} warning(s)",
        file=sys.stderr,
    )
    return 1 if (problems if args.strict else errors) else 0
