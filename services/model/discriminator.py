"""Patch discriminator: real/fake logits per ~40 px patch of the output-resolution image.

Spectral norm on every convolution (a Lipschitz critic: stable hinge training without
gradient penalties, and no batch norm to couple the samples of a batch). Conditioned on the
bicubic-upsampled normalised input, so it judges "plausible detail *for this survey field*",
and on the validity mask: images are zeroed where the mask is 0 and the mask is a channel, so
masked pixels carry no information and cannot change a loss.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from services.model.normalise import INPUT_CHANNELS


@dataclass(frozen=True)
class DiscriminatorConfig:
    channels: int = 24
    downsamplings: int = 3  # receptive field ~ 8 * 2^downsamplings px
    max_multiplier: int = 4  # widest layer = channels * max_multiplier

    @classmethod
    def demo(cls) -> DiscriminatorConfig:
        """~0.3 M parameters, a third of the demo generator's compute per image."""
        return cls(channels=24, downsamplings=3, max_multiplier=4)

    @classmethod
    def full(cls) -> DiscriminatorConfig:
        return cls(channels=48, downsamplings=3, max_multiplier=8)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DiscriminatorConfig:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


class PatchDiscriminator(nn.Module):
    def __init__(self, config: DiscriminatorConfig | None = None, scale: int = 4) -> None:
        super().__init__()
        cfg = config or DiscriminatorConfig.demo()
        self.config, self.scale = cfg, scale
        c = cfg.channels
        layers: list[nn.Module] = [spectral_norm(nn.Conv2d(3 + INPUT_CHANNELS + 1, c, 3, padding=1)), nn.LeakyReLU(0.2)]
        ch = c
        for i in range(cfg.downsamplings):
            out = c * min(2 ** (i + 1), cfg.max_multiplier)
            layers += [spectral_norm(nn.Conv2d(ch, out, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
            ch = out
        layers += [spectral_norm(nn.Conv2d(ch, ch, 3, padding=1)), nn.LeakyReLU(0.2)]
        layers += [spectral_norm(nn.Conv2d(ch, 1, 3, padding=1))]
        self.net = nn.Sequential(*layers)

    def forward(self, image: Tensor, condition: Tensor, mask: Tensor) -> Tensor:
        """image [B, 3, H, W] display, condition [B, INPUT_CHANNELS, h, w] the generator's input (already zero
        where invalid), mask [B, 1, H, W] -> logits [B, 1, H / 2^d, W / 2^d]."""
        up = F.interpolate(condition, size=image.shape[-2:], mode="bicubic", align_corners=False)
        # Normalised inputs run to ~16 on saturated stars: squash so they cannot dominate.
        up = torch.tanh(up / 2.0) * 2.0
        m = mask.to(image.dtype)
        return self.net(torch.cat([image * m, up * m, m], dim=1))

    def patch_weights(self, mask: Tensor, logits: Tensor) -> Tensor:
        """Valid fraction of each logit's cell (a patch of masked pixels counts for nothing)."""
        return F.adaptive_avg_pool2d(mask.to(logits.dtype), logits.shape[-2:])
