"""Small CIFAR ResNets with pre-activation and original residual blocks.

The pre-activation block follows He, Zhang, Ren and Sun (2016), "Identity Mappings in Deep
Residual Networks" (ECCV): BN -> ReLU -> conv, twice, with the identity added after the last
convolution, so the shortcut carries the identity untouched. The original block follows He
et al. (2016), "Deep Residual Learning for Image Recognition" (CVPR): conv -> BN -> ReLU ->
conv -> BN, add, ReLU. When a block subsamples, the shortcut is a 1x1 convolution with
stride 2, as the practical asks (the original paper zero-padded an identity instead).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .registry import check_groups, register_model


class PreActResNetBlock(nn.Module):
    """Pre-activation residual block.

    c_in: input channels; subsample: halve height and width with stride 2;
    c_out: output channels, used only when subsampling (otherwise c_out = c_in).
    """

    def __init__(self, c_in: int, subsample: bool = False, c_out: int = -1):
        super().__init__()
        if not subsample:
            c_out = c_in
        stride = 2 if subsample else 1
        self.net = nn.Sequential(
            nn.BatchNorm2d(c_in),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, stride=stride, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, kernel_size=3, padding=1, bias=False),
        )
        # The shortcut is pre-activated as well, so both branches see normalised inputs.
        self.downsample = nn.Sequential(
            nn.BatchNorm2d(c_in),
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel_size=1, stride=2, bias=False),
        ) if subsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The in-place ReLU inside self.net must not overwrite x, which the shortcut still needs:
        # the first op is a BatchNorm, which writes a new tensor, so x stays intact.
        z = self.net(x)
        if self.downsample is not None:
            x = self.downsample(x)
        return z + x


class ResNetBlock(nn.Module):
    """Original (post-activation) residual block of He et al. (2016, CVPR)."""

    def __init__(self, c_in: int, subsample: bool = False, c_out: int = -1):
        super().__init__()
        if not subsample:
            c_out = c_in
        stride = 2 if subsample else 1
        self.net = nn.Sequential(
            nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, stride=stride, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        self.downsample = (nn.Conv2d(c_in, c_out, kernel_size=1, stride=2, bias=False)
                           if subsample else None)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.net(x)
        if self.downsample is not None:
            x = self.downsample(x)
        return self.act(z + x)


BLOCKS = {"preact": PreActResNetBlock, "original": ResNetBlock}


class ResNet(nn.Module):
    """A CIFAR ResNet: a 3x3 stem, groups of residual blocks, global average pooling, a linear head.

    num_blocks[g] blocks in group g with c_hidden[g] channels; the first block of every group
    but the first subsamples. block: "preact" (default) or "original".
    """

    def __init__(self, num_classes: int = 10, num_blocks: Sequence[int] = (3, 3, 3),
                 c_hidden: Sequence[int] = (16, 24, 32), block: str = "preact"):
        super().__init__()
        self.num_classes = num_classes
        self.num_blocks = list(num_blocks)
        self.c_hidden = list(c_hidden)
        self.block = block
        self._create_network()
        self._init_params()

    def _create_network(self):
        c = self.c_hidden
        block_cls = BLOCKS[self.block]
        if self.block == "preact":
            # The first pre-activation block normalises its input itself.
            self.input_net = nn.Sequential(nn.Conv2d(3, c[0], kernel_size=3, padding=1, bias=False))
        else:
            self.input_net = nn.Sequential(
                nn.Conv2d(3, c[0], kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(c[0]),
                nn.ReLU(inplace=True),
            )
        blocks = []
        for g, n in enumerate(self.num_blocks):
            for b in range(n):
                subsample = b == 0 and g > 0
                blocks.append(block_cls(c_in=c[g - 1] if subsample else c[g],
                                        subsample=subsample, c_out=c[g]))
        self.blocks = nn.Sequential(*blocks)
        # Pre-activation blocks end in a sum, so the head applies the last BN and ReLU.
        head = [nn.BatchNorm2d(c[-1]), nn.ReLU(inplace=True)] if self.block == "preact" else []
        self.output_net = nn.Sequential(*head, nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(),
                                        nn.Linear(c[-1], self.num_classes))

    def _init_params(self):
        # Fan-out Kaiming initialisation, as in the practical (and torchvision's ResNets).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_net(self.blocks(self.input_net(x)))

    def stages(self):
        """(name, modules, description) of the stem, each group of blocks and the head."""
        yield "Stem", list(self.input_net), "3×3 conv"
        i = 0
        kind = "pre-activation" if self.block == "preact" else "original"
        for g, n in enumerate(self.num_blocks):
            sub = " (first subsamples)" if g > 0 else ""
            yield (f"Group {g + 1}", list(self.blocks)[i:i + n],
                   f"{n} × {kind} block, {self.c_hidden[g]} ch{sub}")
            i += n
        head = "BN, ReLU, " if self.block == "preact" else ""
        yield "Head", list(self.output_net), f"{head}global avg pool, linear"


# --- registration --------------------------------------------------------------------------

def _channels_last(params: dict) -> bool:
    """channels_last makes the practical's ResNet about 1.7x faster on the CPU (oneDNN), but
    oneDNN's channels_last backward of a 1x1 stride-2 convolution corrupts the heap on this
    build when a layer has very few channels (seen with 4 channels and odd batch sizes,
    torch 2.14.1). Channel counts that are multiples of 8, like the practical's 16/24/32,
    are safe; anything else keeps the default layout."""
    return all(c % 8 == 0 for c in params["c_hidden"])


_SUBSAMPLING = ("The first block of every group after the first halves the resolution with "
                "stride 2, and its shortcut is a 1×1 convolution with stride 2. Convolutions use "
                "Kaiming fan-out initialisation; global average pooling and a linear layer "
                "classify.")


@register_model(
    "preact_resnet", label="resnet", title="ResNet", description="pre-activation ResNet",
    cite=("he2016identity", "ioffe2015"), check=check_groups, channels_last=_channels_last,
    convolutional=True,
    details="A pre-activation block computes BN, ReLU, 3×3 convolution, BN, ReLU, 3×3 "
            "convolution and adds its input, so no non-linearity sits on the identity path and "
            "batch normalisation precedes every convolution. " + _SUBSAMPLING)
def preact_resnet(num_classes: int = 10, num_blocks: Sequence[int] = (2, 2, 3),
                  c_hidden: Sequence[int] = (16, 24, 32)) -> nn.Module:
    """The practical's network: pre-activation blocks [2, 2, 3] with 16, 24, 32 channels."""
    return ResNet(num_classes, num_blocks, c_hidden, block="preact")


@register_model(
    "resnet", label="resnet", title="ResNet", description="ResNet with original residual blocks",
    cite=("he2016deep", "ioffe2015"), check=check_groups, channels_last=_channels_last,
    convolutional=True,
    details="An original residual block computes 3×3 convolution, BN, ReLU, 3×3 convolution, "
            "BN, adds its input and applies ReLU to the sum. " + _SUBSAMPLING)
def resnet(num_classes: int = 10, num_blocks: Sequence[int] = (2, 2, 3),
           c_hidden: Sequence[int] = (16, 24, 32)) -> nn.Module:
    """The same network with the original (post-activation) block of He et al. (2016, CVPR)."""
    return ResNet(num_classes, num_blocks, c_hidden, block="original")
