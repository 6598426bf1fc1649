"""The core imports without napari or Qt; the wheel ships the manifest and the samples."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
PACKAGE = Path(__import__("napari_nucleiseg").__file__).parent


def test_core_imports_without_napari_or_qt():
    code = (
        "import sys\n"
        "import napari_nucleiseg.io, napari_nucleiseg.metrics, napari_nucleiseg.cli\n"
        "import napari_nucleiseg.inference, napari_nucleiseg.training, napari_nucleiseg.finetune\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'magicgui', 'vispy')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_manifest_validates():
    pytest.importorskip("npe2", reason="the napari layer is not installed (pip install .[napari])")
    npe2 = Path(sys.executable).with_name("npe2")
    out = subprocess.run(
        [str(npe2), "validate", "napari-nucleiseg"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


def build_wheel(folder: Path) -> Path:
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*pip, "-w", str(folder), str(REPO)], check=True)
    (wheel,) = folder.glob("napari_nucleiseg-*.whl")
    return wheel


@pytest.mark.skipif(not (REPO / "pyproject.toml").is_file(), reason="needs the source tree")
def test_wheel_ships_manifest_and_samples(tmp_path):
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        manifest = z.read("napari_nucleiseg/napari.yaml").decode()
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        entry = z.read(entry_points).decode()
    assert manifest == (REPO / "napari.yaml").read_text()
    assert "[napari.manifest]" in entry and "napari_nucleiseg:napari.yaml" in entry
    assert sum(n.startswith("napari_nucleiseg/samples/") and n.endswith(".png") for n in names) > 90
    shipped = {
        str(p.relative_to(REPO / "src"))
        for p in (REPO / "src" / "napari_nucleiseg" / "reference").rglob("*.png")
    }
    assert len(shipped) == 48 and shipped <= names  # the reference set, images and masks


def _imports(path: Path, module: str) -> set[str]:
    """The package's modules that ``module`` imports when it runs (inside functions too;
    not those under ``if TYPE_CHECKING:``, which only type checkers read)."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(node)
        for branch in ast.walk(tree)
        if isinstance(branch, ast.If) and "TYPE_CHECKING" in ast.unparse(branch.test)
        for node in ast.walk(branch)
    }
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only or not isinstance(node, ast.ImportFrom):
            continue
        target = node.module
        if node.level:  # relative: from the package, one level up per extra dot
            parts = package.split(".")
            target = ".".join([*parts[: len(parts) - node.level + 1], *filter(None, [node.module])])
        if target and target.startswith("napari_nucleiseg"):
            found |= {f"{target}.{alias.name}" for alias in node.names} | {target}
    return found


def test_no_import_cycle():
    """A module never needs, even indirectly, a module that needs it back."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {m: _imports(p, m) & modules.keys() - {m} for m, p in modules.items()}

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()] - seen:
                if nxt == goal:
                    return True
                seen.add(nxt)
                todo.append(nxt)
        return False

    packages = {m for m, p in modules.items() if p.name == "__init__.py"}
    cycles = [
        (a, b)
        for a in graph
        for b in graph[a]
        if b not in packages and a not in packages and reaches(b, a)
    ]
    assert not cycles, cycles


@pytest.mark.slow
@pytest.mark.skipif(not (REPO / "pyproject.toml").is_file(), reason="needs the source tree")
def test_the_wheel_without_extras_is_the_core_and_the_command_line(tmp_path):
    """`pip install napari-nucleiseg` on a GPU server or a Dask worker: no napari, no Qt,
    and `nucleiseg predict` segments the shipped samples."""
    import venv

    import torch

    wheel = build_wheel(tmp_path / "wheel")
    venv.create(tmp_path / "env", with_pip=True)
    bin_dir = tmp_path / "env" / ("Scripts" if sys.platform == "win32" else "bin")
    python = str(bin_dir / "python")
    torch_pin = f"torch=={torch.__version__.split('+')[0]}"  # the build already on this machine
    subprocess.run([python, "-m", "pip", "install", "-q", torch_pin, str(wheel)], check=True)
    check = (
        "import importlib.util as u, napari_nucleiseg.inference, napari_nucleiseg.cli\n"
        "missing = [m for m in ('napari', 'qtpy', 'magicgui', 'npe2', 'PyQt6') if u.find_spec(m)]\n"
        "assert not missing, missing\n"
    )
    subprocess.run([python, "-c", check], check=True)
    nucleiseg = str(bin_dir / "nucleiseg")
    subprocess.run([nucleiseg, "samples", "-o", str(tmp_path / "demo")], check=True)
    out = tmp_path / "labels"
    subprocess.run([nucleiseg, "predict", str(tmp_path / "demo"), "-o", str(out)], check=True)
    assert len(list(out.glob("*.tif"))) == 2
