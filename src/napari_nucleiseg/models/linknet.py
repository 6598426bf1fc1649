"""LinkNet (Chaurasia & Culurciello 2017) on a ResNet-18-style encoder.

The encoder is ResNet-18 without its classifier (BasicBlocks, [2, 2, 2, 2]);
each decoder block upsamples x2 and its output is *added* to the encoder
features of the same resolution, which keeps the decoder light. At ``width=64``
the network has about 11.5 M parameters, as in the paper; the total stride is 32.
The decoder follows segmentation_models_pytorch's ``LinknetDecoder``.
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import SegmentationModel, register


def _conv_bn_relu(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class BasicBlock(nn.Module):
    """ResNet's two 3x3 convolutions with an identity (or 1x1 strided) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNetEncoder(nn.Module):
    """ResNet-18 trunk: a 7x7/2 stem, 3x3/2 max pooling, and four stages of BasicBlocks.

    Returns the features at strides 2 (stem), 4, 8, 16 and 32.
    """

    def __init__(self, in_channels: int, width: int, blocks: tuple[int, ...] = (2, 2, 2, 2)):
        super().__init__()
        self.stem = _conv_bn_relu(in_channels, width, 7, stride=2)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.widths = [width * 2**i for i in range(len(blocks))]
        stages, cin = [], width
        for i, (n, cout) in enumerate(zip(blocks, self.widths, strict=True)):
            layers = [BasicBlock(cin, cout, stride=1 if i == 0 else 2)]
            layers += [BasicBlock(cout, cout) for _ in range(n - 1)]
            stages.append(nn.Sequential(*layers))
            cin = cout
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        features = [x]
        x = self.pool(x)
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class LinkNetDecoderBlock(nn.Sequential):
    """1x1 conv to a quarter of the channels, 3x3 transposed conv x2, 1x1 conv to ``cout``."""

    def __init__(self, cin: int, cout: int):
        mid = max(cin // 4, 1)
        super().__init__(
            _conv_bn_relu(cin, mid, 1),
            nn.ConvTranspose2d(mid, mid, 3, stride=2, padding=1, output_padding=1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            _conv_bn_relu(mid, cout, 1),
        )


class LinkNetDecoder(nn.Module):
    """Five x2 decoder blocks; the first four outputs are added to the encoder features."""

    def __init__(self, encoder_widths: list[int], final_width: int):
        super().__init__()
        # channels at strides 32, 16, 8, 4, 2, then the full-resolution output
        chans = [*encoder_widths[::-1], final_width]
        self.blocks = nn.ModuleList(
            LinkNetDecoderBlock(a, b) for a, b in zip(chans[:-1], chans[1:], strict=True)
        )

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        skips = features[-2::-1]  # strides 16, 8, 4, 2
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i < len(skips):
                x = x + skips[i]
        return x


@register("linknet")
class LinkNet(SegmentationModel):
    """LinkNet with a ResNet-18-style encoder.

    Parameters
    ----------
    in_channels : int
        Channels of the normalised input (1 for grey, 3 for RGB).
    out_channels : int
        Target maps predicted (body, border, optionally contour).
    width : int
        Channels of the stem and first stage (64 in ResNet-18); the stages have
        ``width * (1, 2, 4, 8)``. Parameters grow as ``width**2``.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 2, width: int = 64):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if width < 4:
            raise ValueError(f"width must be >= 4, got {width}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.divisor = 32
        self.encoder = ResNetEncoder(in_channels, width)
        encoder_widths = [width, *self.encoder.widths]  # stem, then the four stages
        self.decoder = LinkNetDecoder(encoder_widths, max(width // 2, 1))
        self.head = nn.Conv2d(max(width // 2, 1), out_channels, 3, padding=1)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.decoder(self.encoder(x)))
