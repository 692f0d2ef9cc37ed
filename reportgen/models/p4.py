"""A p4-equivariant pre-activation ResNet: rotation invariance by 90° turns built into the
network instead of learned from augmented data.

Group equivariant convolutions follow Cohen and Welling (2016), "Group Equivariant
Convolutional Networks" (ICML). The group p4 holds the translations and the rotations by
multiples of 90°. A feature map carries one spatial map per rotation: shape
(batch, channels, 4, H, W). Rotating the input by 90° rotates every map by 90° and shifts
the rotation axis cyclically by one (equivariance), so pooling over rotations and space
before the classifier gives logits that do not change at all (invariance).

- `LiftingConv` (Z2 -> p4): one filter, applied in its four rotations.
- `GroupConv` (p4 -> p4): the filter for output rotation r is the base filter rotated by r
  with its input-rotation axis shifted by r; the four are stacked into one filter bank and
  applied with a single `conv2d`.
- `GroupBatchNorm`: statistics per channel, shared across the four rotations (BatchNorm3d
  with the rotation axis as depth), so normalisation does not break the symmetry.
- Down-sampling: a stride-2 convolution on an even-sized map samples pixels (0, 2, ...) that
  a 90° rotation sends to odd ones, so it is not equivariant. A stride-1 convolution followed
  by 2x2 average pooling is: the 2x2 cells of a 32x32 (or 16x16) map rotate onto cells.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .registry import check_groups, register_model

ROTATIONS = 4


def _rot(w: torch.Tensor, r: int) -> torch.Tensor:
    """Rotate the last two (spatial) axes by r * 90° counter-clockwise, like torch.rot90 on
    images (dims H, W)."""
    return torch.rot90(w, r, dims=(-2, -1))


def lifting_bank(w: torch.Tensor) -> torch.Tensor:
    """(C_out, C_in, k, k) -> (C_out, 4, C_in, k, k): the filter in its four rotations."""
    return torch.stack([_rot(w, r) for r in range(ROTATIONS)], dim=1)


def group_bank(w: torch.Tensor) -> torch.Tensor:
    """(C_out, C_in, 4, k, k) -> (C_out, 4, C_in, 4, k, k): for output rotation r, every
    filter rotated by r with input rotation s moved to s + r."""
    return torch.stack([_rot(torch.roll(w, r, dims=2), r) for r in range(ROTATIONS)], dim=1)


class _Bank(nn.Module):
    """A convolution whose filter bank is its weight rearranged by `build` (lifting_bank or
    group_bank), done as one gather.

    Built directly, a bank is a roll and a rot90 per rotation and a stack: about 20
    operations a layer with the backward pass, each a kernel launch on a GPU, for what is
    a fixed rearrangement. The rearrangement of an output channel's entries is computed
    once per device, by running `build` on their positions; the bank is then one gather
    from the weight seen four times (a view), and its backward one scatter into the four
    views (each view's indices are a permutation, so every position is written once and
    the result is deterministic) and a sum over them: the same values and gradients as
    `build`.
    """

    def __init__(self, build):
        super().__init__()
        self._build = build
        self._where: dict[torch.device, torch.Tensor] = {}

    def _index(self, device: torch.device) -> torch.Tensor:
        idx = self._where.get(device)
        if idx is None:
            one = self.weight.shape[1:]  # one output channel's filters
            pos = torch.arange(self.weight[0].numel()).view(1, *one)
            idx = self._where[device] = self._build(pos).reshape(1, ROTATIONS, -1).to(device)
        return idx

    def bank(self) -> torch.Tensor:
        w = self.weight
        c_out = w.shape[0]
        seen = w.reshape(c_out, 1, -1).expand(c_out, ROTATIONS, -1)
        flat = torch.gather(seen, 2, self._index(w.device).expand(c_out, -1, -1))
        return flat.view(c_out, ROTATIONS, *w.shape[1:])


class LiftingConv(_Bank):
    """Z2 -> p4: a k x k convolution applied in its four rotations."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 3):
        super().__init__(lifting_bank)
        self.c_out, self.pad = c_out, kernel_size // 2
        self.weight = nn.Parameter(torch.empty(c_out, c_in, kernel_size, kernel_size))
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.conv2d(x, self.bank().flatten(0, 1), padding=self.pad)  # (B, C_out * 4, H, W)
        return out.unflatten(1, (self.c_out, ROTATIONS))


class GroupConv(_Bank):
    """p4 -> p4 group convolution, as one conv2d over a rotated, cyclically shifted bank."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 3):
        super().__init__(group_bank)
        self.c_out, self.pad = c_out, kernel_size // 2
        self.weight = nn.Parameter(torch.empty(c_out, c_in, ROTATIONS, kernel_size, kernel_size))
        # Fan-out Kaiming over the filter bank actually applied: c_out * 4 maps of k x k.
        std = (2.0 / (c_out * ROTATIONS * kernel_size * kernel_size)) ** 0.5
        nn.init.normal_(self.weight, 0.0, std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.bank()  # (C_out, 4, C_in, 4, k, k)
        out = F.conv2d(x.flatten(1, 2), b.flatten(0, 1).flatten(1, 2), padding=self.pad)
        return out.unflatten(1, (self.c_out, ROTATIONS))


class GroupBatchNorm(nn.BatchNorm3d):
    """Batch normalisation per channel with statistics shared across the four rotations."""


class GroupAvgPool(nn.Module):
    """2x2 average pooling of every rotation's map: commutes with 90° turns on even sizes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x.flatten(1, 2), 2).unflatten(1, x.shape[1:3])


class P4PreActBlock(nn.Module):
    """Pre-activation residual block (He et al. 2016) built from p4 group convolutions."""

    def __init__(self, c_in: int, subsample: bool = False, c_out: int = -1):
        super().__init__()
        if not subsample:
            c_out = c_in
        layers = [GroupBatchNorm(c_in), nn.ReLU(), GroupConv(c_in, c_out)]
        if subsample:
            layers.append(GroupAvgPool())
        self.net = nn.Sequential(*layers, GroupBatchNorm(c_out), nn.ReLU(), GroupConv(c_out, c_out))
        self.downsample = nn.Sequential(GroupBatchNorm(c_in), nn.ReLU(),
                                        GroupConv(c_in, c_out, kernel_size=1),
                                        GroupAvgPool()) if subsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.net(x)
        return z + (self.downsample(x) if self.downsample is not None else x)


class P4ResNet(nn.Module):
    """Lifting stem, groups of p4 pre-activation blocks, pooling over rotations and space,
    and a linear classifier: invariant to rotations by multiples of 90°."""

    def __init__(self, num_classes: int = 10, num_blocks: Sequence[int] = (2, 2, 3),
                 c_hidden: Sequence[int] = (8, 12, 16)):
        super().__init__()
        c = self.c_hidden = list(c_hidden)
        self.num_blocks = list(num_blocks)
        self.num_classes = num_classes
        self.input_net = nn.Sequential(LiftingConv(3, c[0]))
        blocks = []
        for g, n in enumerate(num_blocks):
            for b in range(n):
                sub = b == 0 and g > 0
                blocks.append(P4PreActBlock(c[g - 1] if sub else c[g], sub, c[g]))
        self.blocks = nn.Sequential(*blocks)
        self.output_net = nn.Sequential(GroupBatchNorm(c[-1]), nn.ReLU(), _PoolRotationsSpace(),
                                        nn.Linear(c[-1], num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last group's p4 feature maps, (batch, channels, 4, H, W)."""
        return self.blocks(self.input_net(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_net(self.features(x))

    def stages(self):
        yield "Stem", list(self.input_net), "3×3 lifting conv (4 rotations)"
        i = 0
        for g, n in enumerate(self.num_blocks):
            sub = " (first subsamples)" if g > 0 else ""
            yield (f"Group {g + 1}", list(self.blocks)[i:i + n],
                   f"{n} × p4 pre-activation block, {self.c_hidden[g]} ch × 4 rotations{sub}")
            i += n
        yield "Head", list(self.output_net), "BN, ReLU, mean over rotations and space, linear"


class _PoolRotationsSpace(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3, 4))


@register_model(
    "p4_preact_resnet", label="p4resnet", title="p4-ResNet",
    description="p4-equivariant pre-activation ResNet", cite=("cohen2016", "he2016identity"),
    check=check_groups, p4_invariant=True, convolutional=True,
    axes="channels × rotations × height × width",
    details="Every convolution is a group convolution over the four rotations by multiples of "
            "90° (p4): the stem applies each 3×3 filter in its four rotations, and each later "
            "layer's filter for output rotation r is its base filter rotated by r with the input "
            "rotations shifted cyclically by r, so rotating the image by 90° rotates every "
            "feature map and shifts its rotation axis by one. Batch normalisation shares its "
            "statistics across the four rotations; subsampling is a stride-1 convolution "
            "followed by 2×2 average pooling, which keeps the symmetry exact on 32×32 images; "
            "the head averages over rotations and positions, so the logits are invariant to 90° "
            "turns. The blocks are the pre-activation blocks of the plain network.")
def p4_preact_resnet(num_classes: int = 10, num_blocks: Sequence[int] = (2, 2, 3),
                     c_hidden: Sequence[int] = (8, 12, 16)) -> nn.Module:
    """The practical's block structure with p4 group convolutions; the default widths give
    about the plain network's parameter count."""
    return P4ResNet(num_classes, num_blocks, c_hidden)
