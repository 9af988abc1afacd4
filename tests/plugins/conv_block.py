"""A layer and an architecture from outside the package, as a user writes them: a conv and its activation as
one block, with the layer rule that lowers it to the two, and a 2C2F built of such blocks. Certificates of
a net of them rest on the library's own bounds of the conv, not on anything the block claims. The pipeline
test names this file under `plugins:` and trains the Tempered method on this architecture to Table 1."""

from torch import nn

from gloro.architectures import activation, register_architecture
from gloro.layer_rules import register_layer_rule


class ConvBlock(nn.Module):
    """A zero-padded conv followed by an activation, computed as one layer."""

    def __init__(self, channels: int, out: int, kernel: int, stride: int, activation: nn.Module) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, out, kernel, stride, padding=1)
        self.activation = activation

    def forward(self, x):
        return self.activation(self.conv(x))


register_layer_rule(ConvBlock, lower=lambda block: (block.conv, block.activation))


@register_architecture("2B2F")
def two_blocks(spec):
    """The paper's 2C2F, its convs as blocks: two stride-2 conv blocks, a dense layer and the logits."""
    channels, height, width = spec.input_shape
    for _ in range(2):
        height, width = (height + 2 - 4) // 2 + 1, (width + 2 - 4) // 2 + 1
    return [
        ConvBlock(channels, 16, 4, 2, activation(spec)),
        ConvBlock(16, 32, 4, 2, activation(spec)),
        nn.Flatten(),
        nn.Linear(32 * height * width, 100),
        activation(spec),
        nn.Linear(100, spec.num_classes),
    ]
