"""The generator: normalised survey cutout -> x`scale` outreach-like display image.

forward(x [B, INPUT_CHANNELS, h, w] (services.model.normalise: normalised and display planes),
noise [B, NOISE_CHANNELS, h, w] standard normal, fidelity [B, 1] in [0, 1])
-> [B, 3, scale*h, scale*w] display values in [0, 1].

- Fully convolutional residual network (EDSR-like, no batch norm: statistics would differ
  between training crops and served fields), any h, w; TorchScript-able.
- x`scale` by resize-convolution stages (bilinear x2, then a convolution): no checkerboard, by
  construction rather than by initialisation (sub-pixel convolutions started without one and
  grew one in training).
- Fidelity, two ways: (1) the noise is injected (learned 1x1 projections into every residual
  block and into the fine-resolution stage) scaled by (1 - fidelity), so fidelity = 1 is exactly
  deterministic and samples differ only where the network uses the noise, i.e. where it invents
  detail; (2) FiLM: a small MLP of the fidelity modulates every block (gain and bias per
  channel), so the same weights can render a faithful (pixel-loss-like) or a vivid (adversarial)
  image. FiLM layers start at zero: an untrained network ignores fidelity.
- Output: a learned colour map of the bicubic-upsampled input (starting as the display planes
  themselves, i.e. bicubic upsampling: the level and colour of the survey are the first guess
  and the network learns the outreach look as a correction) plus the network's residual,
  clamped to [0, 1] with a straight-through gradient (the value is clamped; the gradient is
  the identity's, so a pixel pushed out of range can still be pulled back, unlike with clamp).
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from services.model.normalise import DISPLAY_PLANES, INPUT_CHANNELS

NOISE_CHANNELS = 16  # scale^2 of them unfold into the output-resolution noise (x4: one plane, x2: four)


@dataclass(frozen=True)
class GeneratorConfig:
    channels: int = 48  # features at the survey resolution
    blocks: int = 8  # residual blocks at the survey resolution
    hr_channels: int = 24  # features at the output resolution (cheap: the fine grid is scale^2 larger)
    scale: int = 4  # 2 or 4
    res_scale: float = 0.2  # residual branch scaling: deep stacks stay stable without normalisation
    film_dim: int = 32  # fidelity embedding width

    @classmethod
    def demo(cls, scale: int = 4) -> GeneratorConfig:
        """~0.4 M parameters: trains on 2 CPU cores."""
        return cls(channels=48, blocks=8, hr_channels=24, scale=scale)

    @classmethod
    def full(cls, scale: int = 4) -> GeneratorConfig:
        """~2.5 M parameters: the GPU configuration."""
        return cls(channels=80, blocks=16, hr_channels=40, scale=scale)

    @classmethod
    def preset(cls, name: str, scale: int = 4) -> GeneratorConfig:
        if name not in PRESETS:
            raise ValueError(f"unknown generator preset {name!r}: expected one of {sorted(PRESETS)}")
        return getattr(cls, name)(scale)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GeneratorConfig:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


PRESETS = ("demo", "full")


class ResBlock(nn.Module):
    """conv-FiLM-noise-act-conv with a scaled residual."""

    def __init__(self, channels: int, film_dim: int, res_scale: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.film = nn.Linear(film_dim, 2 * channels)
        self.noise = nn.Conv2d(NOISE_CHANNELS, channels, 1, bias=False)
        self.act = nn.LeakyReLU(0.2)
        self.res_scale = res_scale
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)
        nn.init.normal_(self.noise.weight, std=0.1)

    def forward(self, h: Tensor, noise: Tensor, emb: Tensor) -> Tensor:
        """noise: already scaled by (1 - fidelity); emb: the fidelity embedding."""
        gamma, beta = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        y = self.conv1(h) * (1.0 + gamma) + beta
        y = self.act(y + self.noise(noise))
        return h + self.res_scale * self.conv2(y)


class Upsample2(nn.Module):
    """x2 by resize-convolution (Odena et al. 2016): bilinear x2, then a 3x3 conv, then LeakyReLU.
    Every output pixel is made by the same kernel from a smooth upsampled field, so no weights
    can produce the period-2 pattern a sub-pixel (PixelShuffle) or transposed convolution makes
    when its sub-pixel kernels drift apart in training - the checkerboard the evaluation found."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, h: Tensor) -> Tensor:
        up = F.interpolate(h, scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.act(self.conv(up))


class Generator(nn.Module):
    __constants__ = ["scale", "noise_channels", "input_channels", "fine_noise_channels"]

    def __init__(self, config: GeneratorConfig | None = None) -> None:
        super().__init__()
        cfg = config or GeneratorConfig.demo()
        if cfg.scale not in (2, 4):
            raise ValueError(f"scale must be 2 or 4, got {cfg.scale}")
        self.config = cfg
        self.scale = cfg.scale
        self.noise_channels = NOISE_CHANNELS
        self.input_channels = INPUT_CHANNELS
        c, hr = cfg.channels, cfg.hr_channels
        self.fidelity_mlp = nn.Sequential(
            nn.Linear(1, cfg.film_dim), nn.LeakyReLU(0.2), nn.Linear(cfg.film_dim, cfg.film_dim)
        )
        self.head = nn.Conv2d(INPUT_CHANNELS, c, 3, padding=1)
        self.blocks = nn.ModuleList([ResBlock(c, cfg.film_dim, cfg.res_scale) for _ in range(cfg.blocks)])
        self.body_tail = nn.Conv2d(c, c, 3, padding=1)
        stages = [Upsample2(c, c), Upsample2(c, hr)] if cfg.scale == 4 else [Upsample2(c, hr)]
        self.upsample = nn.Sequential(*stages)
        # Noise at the output resolution: fine detail (knots, grain of dust lanes) needs its own
        # randomness. It is drawn on the input grid (serving draws one field before tiling) and
        # unfolded: PixelShuffle turns scale^2 of the noise channels into one independent
        # standard-normal plane at the output resolution - white noise per output pixel, unlike
        # a learned projection of a few values per input pixel, which repeats every `scale` px.
        self.fine_noise_channels = NOISE_CHANNELS // (cfg.scale * cfg.scale)
        self.hr_shuffle = nn.PixelShuffle(cfg.scale)
        self.hr_noise = nn.Conv2d(self.fine_noise_channels, hr, 1, bias=False)
        nn.init.normal_(self.hr_noise.weight, std=0.1)
        self.hr_conv = nn.Conv2d(hr, hr, 3, padding=1)
        self.out_conv = nn.Conv2d(hr, 3, 3, padding=1)
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)
        self.act = nn.LeakyReLU(0.2)
        # The base image: a colour map of the bicubic input, starting as the display planes
        # (bicubic upsampling); training refines it.
        self.skip = nn.Conv2d(INPUT_CHANNELS, 3, 1)
        with torch.no_grad():
            self.skip.weight.zero_()
            self.skip.weight[:, DISPLAY_PLANES].copy_(torch.eye(3)[:, :, None, None])
            self.skip.bias.zero_()

    def forward(self, x: Tensor, noise: Tensor, fidelity: Tensor) -> Tensor:
        if x.dim() != 4 or x.size(1) != self.input_channels:
            raise ValueError("x must be [B, INPUT_CHANNELS, h, w] (services.model.normalise)")
        if noise.dim() != 4 or noise.size(1) != self.noise_channels or noise.shape[2:] != x.shape[2:]:
            raise ValueError("noise must be [B, NOISE_CHANNELS, h, w] on the input grid")
        if fidelity.dim() != 2 or fidelity.size(1) != 1:
            raise ValueError("fidelity must be [B, 1]")
        fid = fidelity.to(x.dtype).clamp(0.0, 1.0)
        noise = noise.to(x.dtype) * (1.0 - fid)[:, :, None, None]  # fidelity 1: exactly deterministic
        emb = self.fidelity_mlp(fid)
        h = self.head(x)
        body = h
        for block in self.blocks:
            body = block(body, noise, emb)
        h = h + self.body_tail(body)
        h = self.upsample(h)
        fine = self.hr_shuffle(noise[:, : self.fine_noise_channels * self.scale * self.scale])
        h = self.act(self.hr_conv(h + self.hr_noise(fine)))
        base = self.skip(F.interpolate(x, scale_factor=float(self.scale), mode="bicubic", align_corners=False))
        y = base + self.out_conv(h)
        # Straight-through clamp: the value of clamp, the gradient of the identity.
        return y + (y.clamp(0.0, 1.0) - y).detach()


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def script(generator: Generator) -> torch.jit.ScriptModule:
    """TorchScript of the generator in eval mode (what is exported to Triton)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.script(generator.eval())


def draw_noise(batch: int, height: int, width: int, generator: torch.Generator | None = None) -> Tensor:
    """Standard normal noise on the input grid (what serving draws for a whole field)."""
    return torch.randn(batch, NOISE_CHANNELS, height, width, generator=generator)


__all__ = [
    "INPUT_CHANNELS",
    "NOISE_CHANNELS",
    "Generator",
    "GeneratorConfig",
    "draw_noise",
    "parameter_count",
    "script",
]
