"""BiRefNet (the network behind RMBG-2.0) as plain PyTorch modules.

Inference-only re-implementation whose state-dict keys are exactly those of
the `briaai/RMBG-2.0` checkpoint (and of BiRefNet_lite for the Swin-T preset),
so weights load with `strict=True` and no renaming. Every architectural choice
that changes the numbers (multi-scale input, context features, decoder input
patches and their channel order, gradient attention, BatchNorm everywhere,
align_corners=True resizes) is fixed by the config presets below.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from models.birefnet_blocks import (
    BasicDecBlk,
    BasicLatBlk,
    SimpleConvs,
    conv1x1_head,
    gradient_attention,
    resize,
)
from models.swin import SwinTransformer

PatchOrder = Literal["wg_hg_c", "c_hg_wg"]
MultiScaleInput = Literal["cat", "add", "none"]


@dataclass(frozen=True)
class BiRefNetConfig:
    """Architecture of one BiRefNet checkpoint.

    `patch_order` is a property of the checkpoint, not of the code: RMBG-2.0
    (BiRefNet code of autumn 2024) stacks decoder input patches as
    `b c (hg h) (wg w) -> b (wg hg c) h w`; checkpoints trained with BiRefNet
    code from November 2024 on expect `b (c hg wg) h w`.
    """

    name: str
    embed_dim: int
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    window_size: int
    patch_size: int = 4
    multi_scale_input: MultiScaleInput = "cat"
    context_features: int = 3
    patch_order: PatchOrder = "wg_hg_c"
    decoder_inter_channels: int = 64
    patch_embed_channels: int = 64
    gradient_channels: int = 16

    PRESETS = ("rmbg-2.0", "birefnet-lite")

    @classmethod
    def preset(cls, name: str, **overrides: object) -> BiRefNetConfig:
        """Named presets; `overrides` replace single fields (e.g. `patch_order`)."""
        presets = {
            "rmbg-2.0": cls(
                name="rmbg-2.0",
                embed_dim=192,
                depths=(2, 2, 18, 2),
                num_heads=(6, 12, 24, 48),
                window_size=12,
            ),
            "birefnet-lite": cls(
                name="birefnet-lite",
                embed_dim=96,
                depths=(2, 2, 6, 2),
                num_heads=(3, 6, 12, 24),
                window_size=7,
            ),
        }
        if name not in presets:
            raise ValueError(f"unknown BiRefNet preset {name!r}; choose one of {sorted(presets)}")
        return dataclasses.replace(presets[name], **overrides)  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        if self.patch_order not in ("wg_hg_c", "c_hg_wg"):
            raise ValueError(
                f"patch_order must be 'wg_hg_c' or 'c_hg_wg', not {self.patch_order!r}"
            )
        if self.multi_scale_input not in ("cat", "add", "none"):
            raise ValueError(f"unknown multi_scale_input {self.multi_scale_input!r}")
        if not 0 <= self.context_features <= 3:
            raise ValueError("context_features must be between 0 and 3")

    @property
    def lateral_channels(self) -> tuple[int, int, int, int]:
        """Encoder widths, deepest first, after multi-scale concatenation."""
        widths = [self.embed_dim * 2**i for i in range(4)][::-1]
        factor = 2 if self.multi_scale_input == "cat" else 1
        return tuple(w * factor for w in widths)  # type: ignore[return-value]

    @property
    def context_channels(self) -> tuple[int, ...]:
        """Widths of the shallower features concatenated onto the deepest one."""
        if not self.context_features:
            return ()
        return self.lateral_channels[1:][::-1][-self.context_features :]


def image_patches(x: torch.Tensor, size: tuple[int, int], order: PatchOrder) -> torch.Tensor:
    """Cut `x` into a grid of `size`-sized patches and stack them on the channel axis."""
    b, c, height, width = x.shape
    h, w = size
    hg, wg = height // h, width // w
    x = x.view(b, c, hg, h, wg, w)
    # (wg, hg, c) for RMBG-2.0, (c, hg, wg) for checkpoints of Nov 2024 on
    dims = (0, 4, 2, 1, 3, 5) if order == "wg_hg_c" else (0, 1, 2, 4, 3, 5)
    x = x.permute(*dims)
    return x.reshape(b, c * hg * wg, h, w)


class Decoder(nn.Module):
    """Progressive decoder with lateral connections, image patches and gradient attention."""

    def __init__(self, config: BiRefNetConfig) -> None:
        super().__init__()
        self.patch_order: PatchOrder = config.patch_order
        c0, c1, c2, c3 = config.lateral_channels
        e = config.patch_embed_channels
        # input channels: 3 colours x number of patches at that stride (32, 16, 8, 4, 1)
        self.ipt_blk5 = SimpleConvs(3 * 32**2, c0 // 8, e)
        self.ipt_blk4 = SimpleConvs(3 * 16**2, c0 // 8, e)
        self.ipt_blk3 = SimpleConvs(3 * 8**2, c1 // 8, e)
        self.ipt_blk2 = SimpleConvs(3 * 4**2, c2 // 8, e)
        self.ipt_blk1 = SimpleConvs(3, c3 // 8, e)

        inter = config.decoder_inter_channels
        self.decoder_block4 = BasicDecBlk(c0 + c0 // 8, c1, inter)
        self.decoder_block3 = BasicDecBlk(c1 + c0 // 8, c2, inter)
        self.decoder_block2 = BasicDecBlk(c2 + c1 // 8, c3, inter)
        self.decoder_block1 = BasicDecBlk(c3 + c2 // 8, c3 // 2, inter)
        self.conv_out1 = conv1x1_head(c3 // 2 + c3 // 8)

        self.lateral_block4 = BasicLatBlk(c1, c1)
        self.lateral_block3 = BasicLatBlk(c2, c2)
        self.lateral_block2 = BasicLatBlk(c3, c3)

        # multi-scale supervision heads: unused at inference, present in the checkpoint
        self.conv_ms_spvn_4 = nn.Conv2d(c1, 1, 1)
        self.conv_ms_spvn_3 = nn.Conv2d(c2, 1, 1)
        self.conv_ms_spvn_2 = nn.Conv2d(c3, 1, 1)

        g = config.gradient_channels
        self.gdt_convs_4 = gradient_attention(c1, g)
        self.gdt_convs_3 = gradient_attention(c2, g)
        self.gdt_convs_2 = gradient_attention(c3, g)
        # gradient prediction heads: training-only, kept for strict loading
        self.gdt_convs_pred_4 = conv1x1_head(g)
        self.gdt_convs_pred_3 = conv1x1_head(g)
        self.gdt_convs_pred_2 = conv1x1_head(g)
        self.gdt_convs_attn_4 = conv1x1_head(g)
        self.gdt_convs_attn_3 = conv1x1_head(g)
        self.gdt_convs_attn_2 = conv1x1_head(g)

    def _with_patches(
        self, feat: torch.Tensor, image: torch.Tensor, blk: nn.Module
    ) -> torch.Tensor:
        size = (feat.shape[2], feat.shape[3])
        patches = image_patches(image, size, self.patch_order)
        return torch.cat((feat, blk(patches)), dim=1)

    @staticmethod
    def _gate(p: torch.Tensor, convs: nn.Module, attn: nn.Module) -> torch.Tensor:
        return p * torch.sigmoid(attn(convs(p)))

    def forward(
        self,
        x: torch.Tensor,
        x1: torch.Tensor,
        x2: torch.Tensor,
        x3: torch.Tensor,
        x4: torch.Tensor,
    ) -> torch.Tensor:
        p4 = self.decoder_block4(self._with_patches(x4, x, self.ipt_blk5))
        p4 = self._gate(p4, self.gdt_convs_4, self.gdt_convs_attn_4)

        p3 = resize(p4, x3.shape[2:]) + self.lateral_block4(x3)
        p3 = self.decoder_block3(self._with_patches(p3, x, self.ipt_blk4))
        p3 = self._gate(p3, self.gdt_convs_3, self.gdt_convs_attn_3)

        p2 = resize(p3, x2.shape[2:]) + self.lateral_block3(x2)
        p2 = self.decoder_block2(self._with_patches(p2, x, self.ipt_blk3))
        p2 = self._gate(p2, self.gdt_convs_2, self.gdt_convs_attn_2)

        p1 = resize(p2, x1.shape[2:]) + self.lateral_block2(x1)
        p1 = self.decoder_block1(self._with_patches(p1, x, self.ipt_blk2))
        p1 = resize(p1, x.shape[2:])
        return self.conv_out1(self._with_patches(p1, x, self.ipt_blk1))


class BiRefNet(nn.Module):
    """Bilateral-reference segmentation network; `forward` returns final logits (B, 1, H, W).

    Only the inference path is implemented: the training-time outputs
    (multi-scale and gradient predictions) are not computed, but their layers
    exist so that checkpoints load strictly.
    """

    def __init__(self, config: BiRefNetConfig) -> None:
        super().__init__()
        self.config = config
        self.bb = SwinTransformer(
            embed_dim=config.embed_dim,
            depths=config.depths,
            num_heads=config.num_heads,
            window_size=config.window_size,
            patch_size=config.patch_size,
        )
        c0 = config.lateral_channels[0]
        self.squeeze_module = nn.Sequential(
            BasicDecBlk(c0 + sum(config.context_channels), c0, config.decoder_inter_channels)
        )
        self.decoder = Decoder(config)

    def set_deform_max_batch(self, max_batch: int | None) -> None:
        """Cap how many images each deformable conv processes at once (memory knob)."""
        for module in self.modules():
            if hasattr(module, "max_batch"):
                module.max_batch = max_batch

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Backbone features (strides 4, 8, 16, 32), multi-scale fused, context added."""
        feats = self.bb(x)
        if self.config.multi_scale_input != "none":
            h, w = x.shape[2:]
            half = self.bb(resize(x, (h // 2, w // 2)))
            up = [resize(f_, f.shape[2:]) for f, f_ in zip(feats, half, strict=True)]
            if self.config.multi_scale_input == "cat":
                feats = [torch.cat((f, u), dim=1) for f, u in zip(feats, up, strict=True)]
            else:
                feats = [f + u for f, u in zip(feats, up, strict=True)]
        n = self.config.context_features
        if n:
            x4 = feats[3]
            context = [resize(f, x4.shape[2:]) for f in feats[:3]][-n:]
            feats[3] = torch.cat((*context, x4), dim=1)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a (B, 3, H, W) batch, got shape {tuple(x.shape)}")
        if x.shape[2] % 32 or x.shape[3] % 32:
            raise ValueError(f"H and W must be multiples of 32, got {tuple(x.shape[2:])}")
        x1, x2, x3, x4 = self.encode(x)
        x4 = self.squeeze_module(x4)
        return self.decoder(x, x1, x2, x3, x4)
