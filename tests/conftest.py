"""Shared fixtures: the small real samples in the repository and the full data set beside it."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
import torch

from napari_nucleiseg.io import read_sample
from napari_nucleiseg.models import ModelConfig, save_checkpoint
from napari_nucleiseg.postprocess import PostprocessConfig, targets_from_labels
from napari_nucleiseg.preprocess import normalize
from napari_nucleiseg.samples import SAMPLES, sample_folder

TESTS = Path(__file__).parent
#: The read-only DSB2018 data; NUCLEISEG_DATA overrides where it lies.
SHARED = Path(os.environ.get("NUCLEISEG_DATA", TESTS.parent.parent / "shared" / "data" / "dsb2018"))
NO_SHARED = f"the full DSB2018 data set is not at {SHARED} (set NUCLEISEG_DATA to its folder)"


def small_sample_folders() -> list[Path]:
    """Real stage-1 samples that always travel with the code: the shipped ones and tests/data."""
    shipped = [sample_folder(kind) for kind in SAMPLES]
    return shipped + sorted((TESTS / "data" / "stage1_fixed").iterdir())


@pytest.fixture
def small_samples() -> list[Path]:
    return small_sample_folders()


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED / "stage1_train").is_dir():
        pytest.skip(NO_SHARED)
    return SHARED


@pytest.fixture
def sample_copy(tmp_path) -> Path:
    """A writable copy of the fluorescence sample, inside a root folder."""
    src = sample_folder("fluorescence")
    dst = tmp_path / "root" / src.name
    shutil.copytree(src, dst)
    return dst


@pytest.fixture
def small_root(tmp_path) -> Path:
    """A root holding copies of all the small samples (two sizes, grey and colour)."""
    root = tmp_path / "small_root"
    for folder in small_sample_folders():
        shutil.copytree(folder, root / folder.name)
    return root


def tree_digest(path: Path) -> str:
    """A hash of every file name and content under ``path``: proves nothing changed on disk."""
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        h.update(str(p.relative_to(path)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A 2-level U-Net that finds nuclei in seconds of set-up: random features, 1x1 head
    fitted by least squares to the fluorescence sample's body and border targets."""
    sample = read_sample(sample_folder("fluorescence"))
    torch.manual_seed(0)
    config = ModelConfig(
        "unet",
        {"depth": 2, "base": 8},
        postprocess=PostprocessConfig(prob_threshold=0.5, seed_threshold=0.6, min_size=10),
    )
    model = config.build().eval()
    x = torch.from_numpy(normalize(sample.image, config.normalization))[None]
    with torch.no_grad():
        features = model.decoder(model.encoder(x))[0].flatten(1)
    design = torch.cat([features, torch.ones(1, features.shape[1])]).T.double()
    target = torch.from_numpy(targets_from_labels(sample.labels)).flatten(1).T.double() * 8 - 4
    solution = torch.linalg.lstsq(design, target).solution.float()
    with torch.no_grad():
        model.head.weight.copy_(solution[:-1].T[:, :, None, None])
        model.head.bias.copy_(solution[-1])
    return save_checkpoint(tmp_path_factory.mktemp("models") / "tiny.pt", model, config)


def write_czi(path: Path, planes: list, pixel_um: float = 0.325) -> Path:
    """A real two-channel CZI, GFP then DAPI, written with pylibCZIrw (the test is skipped
    where it is not installed)."""
    pyczi = pytest.importorskip("pylibCZIrw.czi", reason="pylibCZIrw (bioio-czi) is not installed")
    with pyczi.create_czi(str(path), exist_ok=True) as writer:
        for c, plane in enumerate(planes):
            writer.write(data=plane, plane={"C": c, "T": 0, "Z": 0})
        writer.write_metadata(
            document_name=path.stem, channel_names={0: "GFP", 1: "DAPI"},
            scale_x=pixel_um * 1e-6, scale_y=pixel_um * 1e-6,
        )  # fmt: skip
    return path


def open_dock(viewer, name: str):
    """A dock opened as Plugins > NucleiSeg > ``name`` opens it (napari's own code path,
    which hands the viewer only to a parameter annotated ``napari.viewer.Viewer``)."""
    _, widget = viewer.window.add_plugin_dock_widget("napari-nucleiseg", name)
    return widget


def judged(qtbot, dock, timeout_ms: int = 30_000):
    """Wait until the Segment dock's "auto" has judged the image it shows (in a worker, as
    the user waits for the Segment button to enable); returns the model picked."""
    qtbot.waitUntil(lambda: not dock._model.looking, timeout=timeout_ms)
    return dock._model.chosen


@pytest.fixture
def notes():
    """napari notifications shown during the test."""
    from napari.utils.notifications import notification_manager

    seen = []
    notification_manager.notification_ready.connect(seen.append)
    yield seen
    notification_manager.notification_ready.disconnect(seen.append)
