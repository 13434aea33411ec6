"""Decoder building blocks of BiRefNet: deformable ASPP, decoder, lateral and input blocks.

Names of submodules follow the RMBG-2.0 checkpoint exactly (`dec_att.aspp1`,
`aspp_deforms.N`, `global_avg_pool.1`, ...), including layers that only matter
in training, so that strict loading works.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import deform_conv2d


class DeformableConv2d(nn.Module):
    """Modulated deformable convolution (DCNv2) as BiRefNet builds it.

    Offsets come from `offset_conv`, the modulation mask is
    `2 * sigmoid(modulator_conv(x))`, and the sampling conv uses
    `regular_conv`'s weight. The deformable op itself always runs in float32:
    torchvision has no bfloat16 kernel for it, and the bilinear sampling of
    offsets is where reduced precision hurts most.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int) -> None:
        super().__init__()
        self.padding = padding
        k2 = kernel_size * kernel_size
        self.offset_conv = nn.Conv2d(in_channels, 2 * k2, kernel_size, padding=padding)
        self.modulator_conv = nn.Conv2d(in_channels, k2, kernel_size, padding=padding)
        self.regular_conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, padding=padding, bias=False
        )
        #: run the op on at most this many images at once (None: whole batch);
        #: bounds the size of torchvision's im2col buffer at large batch sizes
        self.max_batch: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset = self.offset_conv(x).float()
        mask = 2.0 * torch.sigmoid(self.modulator_conv(x).float())
        weight = self.regular_conv.weight.float()
        x = x.float()
        step = self.max_batch or x.shape[0]
        outs = [
            deform_conv2d(
                x[i : i + step],
                offset[i : i + step],
                weight,
                padding=(self.padding, self.padding),
                mask=mask[i : i + step],
            )
            for i in range(0, x.shape[0], step)
        ]
        return outs[0] if len(outs) == 1 else torch.cat(outs)


class DeformableBranch(nn.Module):
    """Deformable conv -> BatchNorm -> ReLU, one branch of the ASPP."""

    def __init__(self, in_channels: int, planes: int, kernel_size: int) -> None:
        super().__init__()
        self.atrous_conv = DeformableConv2d(in_channels, planes, kernel_size, kernel_size // 2)
        self.bn = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.atrous_conv(x)))


class ASPPDeformable(nn.Module):
    """Atrous-spatial-pyramid attention with deformable branches and a global-pool branch."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        branch_channels: int = 256,
        kernel_sizes: Sequence[int] = (1, 3, 7),
    ) -> None:
        super().__init__()
        out_channels = out_channels or in_channels
        self.aspp1 = DeformableBranch(in_channels, branch_channels, 1)
        self.aspp_deforms = nn.ModuleList(
            DeformableBranch(in_channels, branch_channels, k) for k in kernel_sizes
        )
        self.global_avg_pool = nn.Sequential(
            nn.AdaptiveAvgPool2d((1, 1)),
            nn.Conv2d(in_channels, branch_channels, 1, bias=False),
            nn.BatchNorm2d(branch_channels),
            nn.ReLU(inplace=True),
        )
        self.conv1 = nn.Conv2d(
            branch_channels * (2 + len(kernel_sizes)), out_channels, 1, bias=False
        )
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.aspp1(x), *(branch(x) for branch in self.aspp_deforms)]
        pooled = self.global_avg_pool(x)
        # a 1x1 map resized with align_corners=True is a plain broadcast
        branches.append(pooled.expand(-1, -1, *x.shape[2:]).to(branches[0].dtype))
        x = self.relu(self.bn1(self.conv1(torch.cat(branches, dim=1))))
        return self.dropout(x)


class BasicDecBlk(nn.Module):
    """conv3x3 -> BN -> ReLU -> deformable ASPP -> conv3x3 -> BN."""

    def __init__(self, in_channels: int, out_channels: int, inter_channels: int = 64) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, inter_channels, 3, padding=1)
        self.relu_in = nn.ReLU(inplace=True)
        self.dec_att = ASPPDeformable(inter_channels)
        self.conv_out = nn.Conv2d(inter_channels, out_channels, 3, padding=1)
        self.bn_in = nn.BatchNorm2d(inter_channels)
        self.bn_out = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu_in(self.bn_in(self.conv_in(x)))
        x = self.dec_att(x)
        return self.bn_out(self.conv_out(x))


class BasicLatBlk(nn.Module):
    """1x1 lateral projection of an encoder feature."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class SimpleConvs(nn.Module):
    """Two 3x3 convs (no activation) that embed image patches for the decoder."""

    def __init__(self, in_channels: int, out_channels: int, inter_channels: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, inter_channels, 3, padding=1)
        self.conv_out = nn.Conv2d(inter_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv1(x))


def gradient_attention(in_channels: int, channels: int = 16) -> nn.Sequential:
    """`gdt_convs_N`: conv3x3 -> BN -> ReLU feeding the gradient-attention heads."""
    return nn.Sequential(
        nn.Conv2d(in_channels, channels, 3, padding=1),
        nn.BatchNorm2d(channels),
        nn.ReLU(inplace=True),
    )


def conv1x1_head(in_channels: int, out_channels: int = 1) -> nn.Sequential:
    """A 1x1 conv wrapped in Sequential, as the checkpoint names it (`*.0.weight`)."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1))


def resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize with align_corners=True, the convention of every resize in BiRefNet."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)
