"""One GAN training step, and the state needed to resume it exactly.

`GanTrainer.step(batch)` takes the data loader's batch (see the #7 conventions):
  input [B,INPUT_CHANNELS,h,w] (services.model.normalise), input_mask [B,1,h,w], target [B,3,sh,sw] display [0,1],
  mask [B,1,sh,sw], noise_sigma [B,3] display units, psf_fwhm [B] survey pixels, synthetic [B];
optional `noise_map` [B,3,h,w] (per-pixel display noise, known for synthetic inputs) overrides
noise_sigma, and optional `noise` [B,NOISE_CHANNELS,h,w] / `fidelity` [B,1] override what the
trainer draws. The consistency term reads the survey in display units from the input's display
planes (normalise.DISPLAY_PLANES).

Schedule and weighting:
- Steps < warmup_steps: reconstruction only (Charbonnier pixel + multi-scale structure +
  observation consistency); the discriminator is idle. Then the adversarial term switches on,
  ramped linearly over adv_ramp_steps, and the discriminator trains with its own (higher)
  learning rate (two time-scale update rule).
- Fidelity f ~ per sample in [0, 1] (a quarter of the samples at exactly 0 and 1 each, so both
  ends of the slider are trained). Once the adversarial term is on: pixel weight
  f + (1 - f) * vivid_pixel_weight, adversarial weight (1 - f): a faithful sample is trained like
  a pixel-loss model, a vivid one mostly by the discriminator. Structure and consistency weigh
  the same at every fidelity: vivid detail must still sit on the observed structure and
  reproduce the survey within its noise.
- Balanced weights, measured each step on the generator's last layer (Esser et al. 2021):
  the adversarial loss is scaled so that its gradient is `adversarial_weight` times the
  reconstruction's, so the generative term keeps real weight however the losses' scales drift
  (rather than fading - the earlier project's "not learning" - or swamping the pixel loss). The
  consistency term has weight `consistency_weight` but its gradient never exceeds
  `consistency_balance` times the reconstruction's: chi^2 gradients scale as 1/noise and would
  otherwise drive the network to fit the input's noise long before its output is any good.
- Synthetic samples (batch["synthetic"]) are judged level-free: their pixel and structure losses
  see the output after the per-channel gain and offset that best fit the target
  (losses.level_matched), since a drawn stretch makes their target's brightness unknowable from
  the input. The level is learned from the real pairs.
- The generator's exponential moving average (EMA) is kept for evaluation and export.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from services.model import losses, observe
from services.model.discriminator import DiscriminatorConfig, PatchDiscriminator
from services.model.generator import NOISE_CHANNELS, Generator, GeneratorConfig
from services.model.normalise import DISPLAY_PLANES

STATE_VERSION = 1


@dataclass(frozen=True)
class TrainConfig:
    generator: GeneratorConfig = field(default_factory=GeneratorConfig.demo)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig.demo)
    lr_generator: float = 2e-4
    lr_discriminator: float = 4e-4  # faster critic (two time-scale update rule)
    # The colour map of the bicubic base (generator.skip) is a dozen global numbers that must travel
    # far (an outreach image is ~2x brighter than its survey cutout): at the network's rate Adam moves
    # them ~lr a step, too slow for a short run, so they learn this many times faster.
    skip_lr_multiplier: float = 10.0
    betas_g: tuple[float, float] = (0.9, 0.99)
    betas_d: tuple[float, float] = (0.5, 0.99)
    warmup_steps: int = 1000
    adv_ramp_steps: int = 500
    pixel_weight: float = 1.0
    structure_weight: float = 1.0
    consistency_weight: float = 0.05  # on the log-chi^2 penalty, at most ...
    consistency_balance: float = 0.3  # ... this times the reconstruction gradient (last layer)
    consistency_start: int = 0  # step the consistency term ramps in from; -1: with the adversarial term
    adversarial_weight: float = 0.5  # adversarial / reconstruction gradient ratio (adaptive)
    adaptive_adversarial: bool = True  # False: adversarial_weight multiplies the loss directly
    max_adaptive: float = 1e3  # cap on the adaptive adversarial scale
    vivid_pixel_weight: float = 0.25
    # A synthetic input's stretch and white are drawn (services.model.degrade), so how bright its
    # target is cannot be told from it: its pixel and structure losses compare the output after
    # the best per-channel gain and offset (losses.level_matched). Synthetic crops teach structure;
    # the level is learned from the real pairs alone.
    synthetic_level_free: bool = True
    fidelity_endpoints: float = 0.25  # probability of exactly 0, and of exactly 1
    consistency_band: tuple[float, float] = (0.8, 1.25)
    # Real crops: the output's chi^2 is judged against the target's own (losses.relative_chi2).
    consistency_relative: bool = True
    grad_clip: float = 10.0
    ema_decay: float = 0.999
    seed: int = 0

    @classmethod
    def preset(cls, name: str, scale: int = 4, **overrides: Any) -> TrainConfig:
        if name == "demo":
            base = cls(GeneratorConfig.demo(scale), DiscriminatorConfig.demo())
        elif name == "full":
            base = cls(GeneratorConfig.full(scale), DiscriminatorConfig.full(), warmup_steps=5000, adv_ramp_steps=2000)
        else:
            raise ValueError(f"unknown training preset {name!r}: expected demo or full")
        return cls(**{**base.__dict__, **overrides})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        known["generator"] = GeneratorConfig.from_dict(d.get("generator", {}))
        known["discriminator"] = DiscriminatorConfig.from_dict(d.get("discriminator", {}))
        for key in ("betas_g", "betas_d", "consistency_band"):
            if key in known:
                known[key] = tuple(known[key])
        return cls(**known)


def _nanmean(values: Tensor) -> float:
    """Mean of the defined values; 0.0 when none is (a NaN would read as a diverged run)."""
    v = values.detach()
    v = v[torch.isfinite(v)]
    return float(v.mean()) if v.numel() else 0.0


def masked_psnr(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """PSNR (dB, peak 1) per sample over the valid pixels."""
    m = (mask > 0.5).float().expand_as(pred)
    mse = ((pred - target) ** 2 * m).sum(dim=(1, 2, 3)) / m.sum(dim=(1, 2, 3)).clamp_min(1.0)
    return 10.0 * torch.log10(1.0 / mse.clamp_min(1e-10))


class GanTrainer:
    def __init__(
        self,
        config: TrainConfig | GeneratorConfig | None = None,
        device: str | torch.device = "cpu",
        amp: bool | None = None,
        **overrides: Any,
    ) -> None:
        """config: a TrainConfig, or a GeneratorConfig with TrainConfig fields as keywords
        (lr_generator=..., warmup_steps=..., seed=...). amp: bfloat16 autocast (default: on CUDA)."""
        if isinstance(config, GeneratorConfig):
            # The discriminator sized like the generator's preset unless given.
            big = config.channels >= GeneratorConfig.full().channels
            overrides.setdefault("discriminator", DiscriminatorConfig.full() if big else DiscriminatorConfig.demo())
            config = TrainConfig(generator=config, **overrides)
        elif overrides:
            config = replace(config or TrainConfig(), **overrides)
        self.config = cfg = config or TrainConfig()
        self.device = torch.device(device)
        self.scale = cfg.generator.scale
        with torch.random.fork_rng(devices=[]):  # seeded initialisation, global RNG untouched
            torch.manual_seed(cfg.seed)
            self.generator = Generator(cfg.generator).to(self.device)
            self.discriminator = PatchDiscriminator(cfg.discriminator, self.scale).to(self.device)
        self.ema = copy.deepcopy(self.generator).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        skip = list(self.generator.skip.parameters())
        rest = [p for n, p in self.generator.named_parameters() if not n.startswith("skip.")]
        self.opt_g = torch.optim.Adam(
            [{"params": rest}, {"params": skip, "lr": cfg.lr_generator * cfg.skip_lr_multiplier}],
            lr=cfg.lr_generator,
            betas=cfg.betas_g,
        )
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=cfg.lr_discriminator, betas=cfg.betas_d)
        self.rng = torch.Generator().manual_seed(cfg.seed + 1)  # fidelity and noise draws (CPU: same on any device)
        self.step_count = 0
        self.amp = self.device.type == "cuda" if amp is None else bool(amp) and self.device.type == "cuda"

    # -- one step -------------------------------------------------------------------------

    def _autocast(self) -> torch.autocast:
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    def _draw(self, b: int, h: int, w: int) -> tuple[Tensor, Tensor]:
        u = torch.rand(b, 1, generator=self.rng)
        pick = torch.rand(b, 1, generator=self.rng)
        e = self.config.fidelity_endpoints
        fidelity = torch.where(pick < e, torch.zeros_like(u), torch.where(pick < 2 * e, torch.ones_like(u), u))
        noise = torch.randn(b, NOISE_CHANNELS, h, w, generator=self.rng)
        return fidelity, noise

    @staticmethod
    def _input_display(batch: dict[str, Tensor]) -> Tensor:
        """The survey input in display units 0..1: the input's display planes."""
        return batch["input"][:, DISPLAY_PLANES].float()

    def adversarial_on(self) -> float:
        """0 before the warm-up ends, then ramping to 1."""
        cfg = self.config
        if self.step_count < cfg.warmup_steps:
            return 0.0
        return min(1.0, (self.step_count - cfg.warmup_steps + 1) / max(cfg.adv_ramp_steps, 1))

    def consistency_on(self) -> float:
        """The consistency term's ramp: with the adversarial term, or from `consistency_start`."""
        cfg = self.config
        start = cfg.warmup_steps if cfg.consistency_start < 0 else cfg.consistency_start
        if self.step_count < start:
            return 0.0
        return min(1.0, (self.step_count - start + 1) / max(cfg.adv_ramp_steps, 1))

    def step(self, batch: dict[str, Tensor]) -> dict[str, float]:
        cfg = self.config
        dev = self.device
        batch = {k: v.to(dev) for k, v in batch.items()}
        in_mask = batch["input_mask"].float()
        x = batch["input"].float() * in_mask  # invalid input pixels carry nothing
        target, mask = batch["target"].float(), batch["mask"].float()
        b, _, h, w = x.shape
        fidelity, noise = self._draw(b, h, w)
        fidelity = batch.get("fidelity", fidelity).to(dev).float().reshape(b, 1)
        noise = batch.get("noise", noise).to(dev).float()
        f = fidelity[:, 0]
        adv_on = self.adversarial_on()
        self.generator.train()
        self.discriminator.train()

        with self._autocast():
            out = self.generator(x, noise, fidelity)
        out = out.float()

        # Discriminator.
        d_loss = d_real = d_fake = 0.0
        if adv_on > 0:
            for p in self.discriminator.parameters():
                p.requires_grad_(True)
            with self._autocast():
                real_logits = self.discriminator(target, x, mask).float()
                fake_logits = self.discriminator(out.detach(), x, mask).float()
            weights = self.discriminator.patch_weights(mask, real_logits)
            loss_d = losses.d_hinge(real_logits, fake_logits, weights)
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.discriminator.parameters(), cfg.grad_clip)
            self.opt_d.step()
            d_loss, d_real, d_fake = (
                float(loss_d.detach()),
                float(real_logits.detach().mean()),
                float(fake_logits.detach().mean()),
            )

        # Generator: reconstruction (the reference every other term is balanced against).
        judged = out
        if cfg.synthetic_level_free and "synthetic" in batch:
            judged = losses.level_matched(out, target, mask, batch["synthetic"])
        pixel = losses.charbonnier(judged, target, mask)
        struct = losses.structure(judged, target, mask)
        # Vivid samples lean on the pixel loss less as the adversarial term comes in (in the warm-up
        # every sample learns the full reconstruction, the base the generative term departs from).
        pixel_w = 1.0 - adv_on * (1.0 - cfg.vivid_pixel_weight) * (1.0 - f)
        rec = (cfg.pixel_weight * pixel_w * pixel + cfg.structure_weight * struct).mean()
        last = self.generator.out_conv.weight
        g_rec_norm: Tensor | None = None

        def rec_norm() -> Tensor:
            nonlocal g_rec_norm
            if g_rec_norm is None:
                g_rec_norm = torch.autograd.grad(rec, last, retain_graph=True)[0].norm()
            return g_rec_norm

        def balanced(term: Tensor, weight: float, cap: float) -> float:
            """weight, or less: the term's gradient on the last layer is at most `cap` times the
            reconstruction's."""
            if not term.requires_grad or weight <= 0:
                return 0.0
            g = torch.autograd.grad(term, last, retain_graph=True)[0].norm()
            return float(min(weight, cap * float(rec_norm()) / (float(g) + 1e-12)))

        # Generator: observation consistency.
        total = rec
        chi2_mean, chi2_target_mean, cons_scale = 0.0, 0.0, 0.0
        cons_on = self.consistency_on()
        if cfg.consistency_weight > 0:
            sigma = batch["noise_map"] if "noise_map" in batch else batch["noise_sigma"]
            with torch.set_grad_enabled(cons_on > 0):
                chi2 = observe.observation_chi2(
                    out, self._input_display(batch), sigma, batch["psf_fwhm"], in_mask, self.scale
                )
            chi2_mean = _nanmean(chi2)
            real = ~batch["synthetic"].to(torch.bool) if "synthetic" in batch else None
            if cfg.consistency_relative and real is not None and bool(real.any()):  # only real crops use it
                with torch.no_grad():
                    target_chi2 = observe.observation_chi2(
                        target, self._input_display(batch), sigma, batch["psf_fwhm"], in_mask, self.scale
                    )
                chi2_target_mean = _nanmean(target_chi2[real])
                chi2 = losses.relative_chi2(chi2, target_chi2, batch["synthetic"])
            if cons_on > 0:
                lo, hi = cfg.consistency_band
                cons = losses.consistency_loss(chi2, lo, hi).mean()
                cons_scale = balanced(cons, cfg.consistency_weight * cons_on, cfg.consistency_balance)
                total = total + cons_scale * cons

        # Generator: adversarial.
        adv_value, adv_scale = 0.0, 0.0
        if adv_on > 0:
            for p in self.discriminator.parameters():
                p.requires_grad_(False)
            with self._autocast():
                logits = self.discriminator(out, x, mask).float()
            adv = (losses.g_hinge(logits, self.discriminator.patch_weights(mask, logits)) * (1.0 - f)).mean()
            adv_scale = cfg.adversarial_weight * adv_on
            if cfg.adaptive_adversarial:
                adv_scale = balanced(adv, cfg.max_adaptive, adv_scale)
            total = total + adv_scale * adv
            adv_value = float(adv.detach())
        self.opt_g.zero_grad(set_to_none=True)
        total.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.generator.parameters(), cfg.grad_clip)
        self.opt_g.step()
        for p in self.discriminator.parameters():
            p.requires_grad_(True)
        self._update_ema()
        self.step_count += 1
        return {
            "step": float(self.step_count),
            "loss_g": float(total.detach()),
            "pixel": float(pixel.detach().mean()),
            "structure": float(struct.detach().mean()),
            "chi2": chi2_mean,
            "chi2_target_real": chi2_target_mean,
            "adversarial": adv_value,
            "adversarial_scale": adv_scale,
            "consistency_scale": cons_scale,
            "d_loss": d_loss,
            "d_real": d_real,
            "d_fake": d_fake,
            "fidelity": float(f.mean()),
        }

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = min(self.config.ema_decay, (1.0 + self.step_count) / (10.0 + self.step_count))
        for e, p in zip(self.ema.parameters(), self.generator.parameters(), strict=True):
            e.lerp_(p.detach(), 1.0 - decay)
        for e, p in zip(self.ema.buffers(), self.generator.buffers(), strict=True):
            e.copy_(p)

    # -- inference and state --------------------------------------------------------------

    @torch.no_grad()
    def generate(
        self, x: Tensor, fidelity: float = 1.0, noise: Tensor | None = None, ema: bool = True, seed: int = 0
    ) -> Tensor:
        """Render [B,3,h,w] normalised inputs (eval mode; the EMA weights unless ema=False). Noise,
        unless given, is drawn from `seed` (never from the training stream: resuming stays exact)."""
        g = self.ema if ema else self.generator
        g.eval()
        b, _, h, w = x.shape
        if noise is None:
            noise = torch.randn(b, NOISE_CHANNELS, h, w, generator=torch.Generator().manual_seed(seed))
        fid = torch.full((b, 1), float(fidelity), device=self.device)
        with self._autocast():
            out = g(x.to(self.device).float(), noise.to(self.device), fid)
        return out.float()

    @torch.no_grad()
    def validate(self, batch: dict[str, Tensor]) -> dict[str, float]:
        """Masked PSNR (dB) of the EMA generator at fidelity 1 (faithful) and 0 (vivid, fixed noise
        seed), of bicubic upsampling of the display planes, and the faithful output's
        consistency chi^2 when it can be computed."""
        dev = self.device
        batch = {k: v.to(dev) for k, v in batch.items()}
        in_mask = batch["input_mask"].float()
        x = batch["input"].float() * in_mask
        target, mask = batch["target"].float(), batch["mask"].float()
        out: dict[str, float] = {}
        faithful = self.generate(x, 1.0)
        outputs = {"faithful": faithful, "vivid": self.generate(x, 0.0)}
        up = F.interpolate(self._input_display(batch), scale_factor=float(self.scale), mode="bicubic")
        outputs["bicubic"] = up.clamp(0.0, 1.0)
        for name, image in outputs.items():
            out[f"psnr_{name}"] = float(masked_psnr(image, target, mask).mean())
        try:
            sigma = batch["noise_map"] if "noise_map" in batch else batch["noise_sigma"]
            chi2 = observe.observation_chi2(
                faithful, self._input_display(batch), sigma, batch["psf_fwhm"], in_mask, self.scale
            )
            out["chi2_faithful"] = _nanmean(chi2)
        except KeyError:
            pass
        return out

    def generator_for_export(self) -> Generator:
        """The EMA generator, on the CPU, in eval mode (a copy)."""
        return copy.deepcopy(self.ema).cpu().eval()

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "config": self.config.to_dict(),
            "step": self.step_count,
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "ema": self.ema.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "rng": self.rng.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"trainer state version {state.get('version')!r} is not {STATE_VERSION}")
        if TrainConfig.from_dict(state["config"]) != self.config:
            raise ValueError("the checkpoint was written with another training configuration")
        self.generator.load_state_dict(state["generator"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.ema.load_state_dict(state["ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.rng.set_state(state["rng"].cpu() if isinstance(state["rng"], Tensor) else state["rng"])
        self.step_count = int(state["step"])
