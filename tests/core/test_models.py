"""Models: shapes for odd sizes, parameter counts, registry errors, checkpoints and their errors."""

from __future__ import annotations

import json

import pytest
import torch

import napari_nucleiseg
from napari_nucleiseg.errors import FileProblem
from napari_nucleiseg.models import (
    LinkNet,
    ModelConfig,
    UNet,
    available_models,
    create_model,
    load_model,
    read_checkpoint,
    save_checkpoint,
)

SMALL = {
    "unet": {"depth": 3, "base": 4},
    "linknet": {"width": 8},
}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ["unet", "linknet"])
@pytest.mark.parametrize("shape", [(250, 333), (64, 64), (17, 5)])
def test_output_shape_matches_any_input(name, shape):
    model = create_model(name, in_channels=1, out_channels=3, **SMALL[name]).eval()
    with torch.inference_mode():
        y = model(torch.rand(2, 1, *shape))
    assert y.shape == (2, 3, *shape)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("upsampling", ["transpose", "resize"])
def test_unet_options(upsampling):
    model = UNet(in_channels=3, out_channels=2, depth=5, base=2, upsampling=upsampling)
    assert model.divisor == 32
    with torch.inference_mode():
        assert model.eval()(torch.rand(1, 3, 70, 90)).shape == (1, 2, 70, 90)
    no_bn = UNet(depth=2, base=4, batch_norm=False)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in no_bn.modules())


def test_parameter_counts():
    # ResNet-18-style LinkNet of the paper: about 11.5 M parameters
    assert 10e6 < n_params(LinkNet(width=64)) < 13e6
    assert LinkNet(width=64).divisor == 32
    # the 2015 U-Net: about 31 M
    assert 30e6 < n_params(UNet(depth=4, base=64, batch_norm=False)) < 32e6
    assert n_params(UNet(depth=4, base=32, max_width=128)) < n_params(UNet(depth=4, base=32))


def test_registry_errors_list_names():
    assert {"unet", "linknet"} <= set(available_models())
    with pytest.raises(ValueError, match="linknet.*unet|unet.*linknet"):
        create_model("segnet")
    with pytest.raises(ValueError, match="does not accept"):
        create_model("linknet", depth=4)
    with pytest.raises(ValueError, match="upsampling"):
        create_model("unet", upsampling="nearest")


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    config = ModelConfig("unet", {"depth": 2, "base": 4}, maps=("body", "border", "contour"))
    model = config.build()
    # move batch-norm statistics away from their defaults
    model.train()
    with torch.no_grad():
        model(torch.rand(4, 1, 32, 32))
    model.eval()
    path = save_checkpoint(tmp_path / "m.pt", model, config)
    loaded, loaded_config = load_model(path, device="cpu")
    assert loaded_config.to_dict() == config.to_dict()
    assert not loaded.training
    x = torch.rand(1, 1, 40, 52)
    with torch.inference_mode():
        assert torch.equal(model(x), loaded(x))
    assert not list(tmp_path.glob("*.tmp"))


def test_half_checkpoint_loads_as_float32(tmp_path):
    config = ModelConfig("linknet", {"width": 8})
    model = config.build().eval()
    path = save_checkpoint(tmp_path / "h.pt", model, config, half=True)
    _, state = read_checkpoint(path)
    assert state["head.weight"].dtype == torch.float16
    loaded, _ = load_model(path)
    assert loaded.head.weight.dtype == torch.float32
    x = torch.rand(1, 1, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(model(x), loaded(x), atol=1e-2)


def test_wrong_architecture_names_the_file(tmp_path):
    config = ModelConfig("unet", {"depth": 2, "base": 4})
    path = save_checkpoint(tmp_path / "unet.pt", config.build(), config)
    payload = torch.load(path, weights_only=True)
    # the same weights, but a config claiming LinkNet
    payload["config"] = json.dumps(ModelConfig("linknet", {"width": 8}).to_dict())
    torch.save(payload, tmp_path / "liar.pt")
    with pytest.raises(FileProblem, match="liar.pt.*do not fit the 'linknet'") as info:
        load_model(tmp_path / "liar.pt")
    assert info.value.path.endswith("liar.pt")


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"not a checkpoint at all", "not a readable"),
        (b"", "not a readable"),
    ],
)
def test_corrupt_file_names_the_file(tmp_path, content, reason):
    path = tmp_path / "broken.pt"
    path.write_bytes(content)
    with pytest.raises(FileProblem, match=reason) as info:
        load_model(path)
    assert info.value.path == str(path)


def test_foreign_and_unsafe_files_are_refused(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(FileProblem, match="foreign.pt.*not a napari-nucleiseg checkpoint"):
        load_model(tmp_path / "foreign.pt")
    # a pickled object other than plain data must not be unpickled
    torch.save({"format": "napari-nucleiseg", "obj": ModelConfig()}, tmp_path / "unsafe.pt")
    with pytest.raises(FileProblem, match="unsafe.pt.*torch.load refused"):
        load_model(tmp_path / "unsafe.pt")
    with pytest.raises(FileProblem, match="missing.pt"):
        load_model(tmp_path / "missing.pt")


def test_a_setting_this_version_does_not_know_names_the_writer(tmp_path):
    """A checkpoint whose config holds a key a later version added (as ``min_mean_prob`` was)
    is refused, naming the file, the key and the version that wrote it."""
    config = ModelConfig("unet", {"depth": 1, "base": 2})
    path = save_checkpoint(tmp_path / "later.pt", config.build(), config)
    payload = torch.load(path, weights_only=True)
    assert payload["written_by"] == napari_nucleiseg.__version__
    later = json.loads(payload["config"])
    later["postprocess"]["min_halo"] = 3
    torch.save(payload | {"config": json.dumps(later), "written_by": "9.0"}, path)
    with pytest.raises(
        FileProblem, match=r"later.pt.*unknown keys: min_halo.*napari-nucleiseg 9\.0"
    ):
        load_model(path)
    del payload["written_by"]  # written before the version was recorded
    torch.save(payload | {"config": json.dumps(later)}, path)
    with pytest.raises(FileProblem, match="min_halo.*written by another build"):
        load_model(path)


def test_unknown_name_lists_shipped_models():
    with pytest.raises(FileProblem, match="neither a checkpoint file nor a shipped model name"):
        load_model("no-such-model")


def test_save_never_clobbers_on_failure(tmp_path, monkeypatch):
    config = ModelConfig("unet", {"depth": 1, "base": 2})
    path = save_checkpoint(tmp_path / "keep.pt", config.build(), config)
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", fail)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, config.build(), config)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.pt"]


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="maps"):
        ModelConfig(maps=("border", "body"))
    with pytest.raises(ValueError, match="in_channels"):
        ModelConfig(arch_kwargs={"in_channels": 3})
    with pytest.raises(ValueError, match="unknown keys: colour"):
        ModelConfig.from_dict({"colour": 1})
    rgb = ModelConfig.from_dict({"normalization": {"channels": "rgb"}})
    assert rgb.in_channels == 3 and rgb.build().in_channels == 3
