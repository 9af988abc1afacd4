"""The ConvNet of the 1-Lipschitz-layers comparison (Prach et al., CVPR 2024), with any family's square conv
layer plugged in: its skeleton of channel padding, blocks of convs with MinMax, and space-to-depth steps."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from gloro.architectures import ArchitectureSpec
from gloro.layers import ChannelPad, FirstChannels, MinMax, normalized_linear

SquareConv = Callable[[int, int, str, tuple[int, int]], nn.Module]  # (channels, kernel, position, size) → a conv


def comparison_conv_net(spec: ArchitectureSpec, width: int, conv: SquareConv, per_block: int = 5) -> list[nn.Module]:
    """The channels zero-padded to `width`, a 1×1 conv, then blocks of `per_block` convs (3×3; 1×1 once the
    image is 2×2), each followed by MinMax, that end by keeping half the channels and moving each 2×2 patch into
    channels (an odd side zero-padded by one first), until the image is 1×1; a 1×1 conv and the row-normalised
    head (theirs: the first 10 channels). `conv(channels, kernel, position, size)` builds each conv, position
    "first", "block" or "last", for inputs of `size` (H, W) (a layer that keeps a power-iteration vector needs it)."""
    channels, height, width_px = spec.input_shape
    if channels > width:
        raise ValueError(f"this net pads the channels up to {width}, but the input has {channels}")
    layers: list[nn.Module] = [ChannelPad(width), conv(width, 1, "first", (height, width_px)), MinMax()]
    size, current = (height, width_px), width
    while max(size) > 1:
        kernel = 3 if min(size) > 2 else 1
        for _ in range(per_block):
            layers += [conv(current, kernel, "block", size), MinMax()]
        if size[0] % 2 or size[1] % 2:
            layers.append(nn.ZeroPad2d((0, size[1] % 2, 0, size[0] % 2)))
        layers += [FirstChannels(current // 2), nn.PixelUnshuffle(2)]
        size, current = ((size[0] + 1) // 2, (size[1] + 1) // 2), 2 * current
    layers += [conv(current, 1, "last", size), nn.Flatten()]
    return [*layers, normalized_linear(current, spec.num_classes)]
