"""U-Net (Ronneberger et al. 2015) with configurable depth, width, batch norm and upsampling.

``UNet(depth=4, base=64, batch_norm=False, upsampling="transpose")`` is the
2015 network (about 31 M parameters); the deeper, batch-normalised variants
that did better on DSB2018 are settings of the same class.
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import SegmentationModel, register

UPSAMPLING = ("transpose", "resize")


def _conv(cin: int, cout: int, batch_norm: bool, kernel: int = 3) -> list[nn.Module]:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=not batch_norm)
    ]
    if batch_norm:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.ReLU(inplace=True))
    return layers


class ConvBlock(nn.Sequential):
    """Two 3x3 convolutions, each followed by batch norm (optional) and ReLU."""

    def __init__(self, cin: int, cout: int, batch_norm: bool = True):
        super().__init__(*_conv(cin, cout, batch_norm), *_conv(cout, cout, batch_norm))


class Up(nn.Module):
    """Double the resolution: a 2x2 transposed convolution, or bilinear resize then a 3x3 conv.

    Resize-convolution avoids the checkerboard artefacts of transposed
    convolutions (Odena et al. 2016).
    """

    def __init__(self, cin: int, cout: int, mode: str, batch_norm: bool):
        super().__init__()
        if mode == "transpose":
            self.up: nn.Module = nn.ConvTranspose2d(cin, cout, 2, stride=2)
        else:
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                *_conv(cin, cout, batch_norm),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(x)


class UNetEncoder(nn.Module):
    """``depth + 1`` conv blocks separated by 2x2 max pooling; returns every level's features."""

    def __init__(self, in_channels: int, widths: list[int], batch_norm: bool):
        super().__init__()
        cins = [in_channels, *widths[:-1]]
        self.blocks = nn.ModuleList(
            ConvBlock(a, b, batch_norm) for a, b in zip(cins, widths, strict=True)
        )
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for i, block in enumerate(self.blocks):
            x = block(self.pool(x) if i else x)
            features.append(x)
        return features


class UNetDecoder(nn.Module):
    """Upsample, concatenate the encoder features of the same level, conv block; repeat."""

    def __init__(self, widths: list[int], upsampling: str, batch_norm: bool):
        super().__init__()
        rev = widths[::-1]  # deepest first
        self.ups = nn.ModuleList(
            Up(a, b, upsampling, batch_norm) for a, b in zip(rev[:-1], rev[1:], strict=True)
        )
        self.blocks = nn.ModuleList(ConvBlock(2 * b, b, batch_norm) for b in rev[1:])

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for up, block, skip in zip(self.ups, self.blocks, features[-2::-1], strict=True):
            x = block(torch.cat([up(x), skip], dim=1))
        return x


@register("unet")
class UNet(SegmentationModel):
    """U-Net: encoder, decoder with concatenated skips, and a 1x1 head.

    Parameters
    ----------
    in_channels : int
        Channels of the normalised input (1 for grey, 3 for RGB).
    out_channels : int
        Target maps predicted (body, border, optionally contour).
    depth : int
        Number of 2x downsamplings; H and W are padded to multiples of ``2**depth``.
    base : int
        Width of the first level; level ``i`` has ``base * 2**i`` channels,
        capped at ``max_width``.
    batch_norm : bool
        Batch normalisation after every convolution.
    upsampling : {"transpose", "resize"}
        Transposed convolution, or bilinear resize followed by a 3x3 convolution.
    max_width : int, optional
        Cap on the channels of the deep levels (keeps deep U-Nets small).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        depth: int = 4,
        base: int = 32,
        batch_norm: bool = True,
        upsampling: str = "transpose",
        max_width: int | None = None,
    ):
        super().__init__()
        _validate_unet(in_channels, out_channels, depth, base, upsampling, max_width)
        widths = [base * 2**i for i in range(depth + 1)]
        if max_width is not None:
            widths = [min(w, max_width) for w in widths]
        self.in_channels, self.out_channels = in_channels, out_channels
        self.divisor = 2**depth
        self.encoder = UNetEncoder(in_channels, widths, batch_norm)
        self.decoder = UNetDecoder(widths, upsampling, batch_norm)
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.decoder(self.encoder(x)))


def _validate_unet(
    in_channels: int,
    out_channels: int,
    depth: int,
    base: int,
    upsampling: str,
    max_width: int | None,
) -> None:
    for name, value in (
        ("in_channels", in_channels),
        ("out_channels", out_channels),
        ("base", base),
    ):
        if int(value) < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if not 1 <= depth <= 8:
        raise ValueError(f"depth must be between 1 and 8, got {depth}")
    if upsampling not in UPSAMPLING:
        raise ValueError(f"upsampling must be one of {', '.join(UPSAMPLING)}, got {upsampling!r}")
    if max_width is not None and max_width < 1:
        raise ValueError(f"max_width must be >= 1, got {max_width}")
