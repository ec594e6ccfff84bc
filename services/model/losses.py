"""Generator and discriminator losses. Every loss takes the validity masks (1 = valid) and
returns one value per sample ([B]) unless stated, so the trainer can weight samples (by
fidelity) before averaging; masked pixels never enter a loss.

Weighting of the observation-consistency term (`consistency_loss`): the reduced chi^2 of the
re-observed output against the survey input should be ~1. Above 1 the output contradicts the
observation; below 1 it reproduces the survey's noise (deconvolved noise: the worst artefact a
super-resolver can make). Both sides are penalised, in log chi^2 (symmetric in ratio and with
bounded gradients, so an untrained network's chi^2 of ~100 does not swamp the pixel loss), with
a dead zone [lo, hi] because the truth itself is not at exactly 1: the PSF wings, the stretch
and the noise model of a real survey are only approximately known.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

CHARBONNIER_EPS = 1e-3
STRUCTURE_SCALES = (1, 2, 4)


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Per-sample mean of values [B, C, H, W] over mask [B, 1, H, W]; 0 where nothing is valid."""
    m = mask.to(values.dtype).expand_as(values)
    return (values * m).sum(dim=(1, 2, 3)) / m.sum(dim=(1, 2, 3)).clamp_min(1.0)


def charbonnier(pred: Tensor, target: Tensor, mask: Tensor, eps: float = CHARBONNIER_EPS) -> Tensor:
    """Smooth L1 (sqrt(d^2 + eps^2) - eps): robust like L1 (sharper than L2), smooth at 0."""
    diff = torch.where(mask > 0.5, pred - target, torch.zeros_like(pred))
    return _masked_mean(torch.sqrt(diff * diff + eps * eps) - eps, mask)


def _min_pool(mask: Tensor, k: int) -> Tensor:
    """A coarse pixel is valid only if all its fine pixels are."""
    return -F.max_pool2d(-mask, k) if k > 1 else mask


def structure(pred: Tensor, target: Tensor, mask: Tensor, scales: tuple[int, ...] = STRUCTURE_SCALES) -> Tensor:
    """Multi-scale gradient loss: Charbonnier of horizontal and vertical differences at 1, 1/2,
    1/4 resolution. Edges, knots and lanes are matched, not just mean levels; a difference
    counts only where both its pixels are valid."""
    total = torch.zeros(pred.shape[0], device=pred.device, dtype=pred.dtype)
    m = (mask > 0.5).to(pred.dtype)
    t = torch.where(m > 0, target, torch.zeros_like(target))
    for k in scales:
        p_k = F.avg_pool2d(pred, k) if k > 1 else pred
        t_k = F.avg_pool2d(t, k) if k > 1 else t
        m_k = _min_pool(m, k)
        for dim in (-1, -2):
            dp, dt = torch.diff(p_k, dim=dim), torch.diff(t_k, dim=dim)
            dm = m_k.narrow(dim, 0, m_k.shape[dim] - 1) * m_k.narrow(dim, 1, m_k.shape[dim] - 1)
            total = total + charbonnier(dp, dt, dm)
    return total / (2 * len(scales))


def level_matched(pred: Tensor, target: Tensor, mask: Tensor, which: Tensor) -> Tensor:
    """``pred`` with, for the samples where ``which`` [B] is true, the per-channel gain and offset
    that best fit it to ``target`` over ``mask`` applied: the least-squares gain (in [0.1, 10], 1
    where the prediction is flat), and the offset that puts the residual's median at 0. The fit is
    not differentiated: an L1-like loss on the result (Charbonnier) has no gradient along the
    prediction's overall level and judges its structure. (The evaluation's diagnostic of the same
    idea is services.trainer.metrics.level_matched: least squares, on one numpy image.)"""
    m = (mask > 0.5).to(pred.dtype)
    n = m.sum(dim=(2, 3)).clamp_min(1.0)  # [B, 1]
    p = pred.detach()
    mean_p = (p * m).sum(dim=(2, 3)) / n
    mean_t = (target * m).sum(dim=(2, 3)) / n
    dp = p - mean_p[:, :, None, None]
    var = (dp * dp * m).sum(dim=(2, 3)) / n
    cov = (dp * (target - mean_t[:, :, None, None]) * m).sum(dim=(2, 3)) / n
    gain = torch.where(var > 1e-6, cov / var.clamp_min(1e-6), torch.ones_like(var)).clamp(0.1, 10.0)
    offset = mean_t - gain * mean_p
    # Then the offset that centres the residual on its median: the pixel loss is L1-like, and its
    # gradient would otherwise still pull the level towards the residual's median.
    residual = torch.where(m > 0, target - p * gain[:, :, None, None] - offset[:, :, None, None], torch.nan)
    offset = offset + torch.nanmedian(residual.flatten(2), dim=2).values.nan_to_num(0.0)
    sel = which.reshape(-1, 1).to(pred.dtype)
    gain, offset = sel * gain + (1.0 - sel), sel * offset
    return pred * gain[:, :, None, None] + offset[:, :, None, None]


def d_hinge(real_logits: Tensor, fake_logits: Tensor, weights: Tensor) -> Tensor:
    """Discriminator hinge loss (scalar), patches weighted by their valid fraction."""
    w = weights.to(real_logits.dtype)
    norm = w.sum().clamp_min(1e-6)
    real = (F.relu(1.0 - real_logits) * w).sum() / norm
    fake = (F.relu(1.0 + fake_logits) * w).sum() / norm
    return real + fake


def g_hinge(fake_logits: Tensor, weights: Tensor) -> Tensor:
    """Generator hinge loss per sample: -mean logit over valid patches."""
    w = weights.to(fake_logits.dtype)
    return -(fake_logits * w).sum(dim=(1, 2, 3)) / w.sum(dim=(1, 2, 3)).clamp_min(1e-6)


def consistency_loss(chi2: Tensor, lo: float = 0.8, hi: float = 1.25) -> Tensor:
    """Per-sample penalty on a reduced chi^2 outside [lo, hi] (squared distance in log chi^2);
    0 where chi^2 is undefined (NaN: too few valid pixels)."""
    defined = torch.isfinite(chi2)
    safe = torch.where(defined, chi2, torch.ones_like(chi2))  # no NaN in the graph: its gradient would be NaN
    log_chi2 = torch.log(safe.clamp_min(1e-6))
    above = F.relu(log_chi2 - math.log(hi))
    below = F.relu(math.log(lo) - log_chi2)
    return torch.where(defined, above * above + below * below, torch.zeros_like(chi2))


def relative_chi2(chi2: Tensor, target_chi2: Tensor, synthetic: Tensor) -> Tensor:
    """A sample's chi^2 as consistency_loss should judge it: against the chi^2 the true target itself
    gets from the same survey input, where that exceeds 1 on a real crop; as it is otherwise.

    A synthetic input is made by the observation model, so the target explains it within its noise
    (chi^2 ~ 1). A real survey cutout is not: plate grain, PSF, colour response and the outreach
    image's own processing differ from the model, and the demo's real test windows give the target
    itself a chi^2 of 2-20. Asking the output for chi^2 ~ 1 there would ask it to reproduce the
    survey more closely than the truth does: its noise and grain. So the output is asked to be
    about as consistent as the truth, and no more: where the reference exceeds 1, a chi^2 below it
    is not penalised (it says nothing about fitting noise then, and a push away from the survey
    would not be a push towards the truth). NaN (undefined) target chi^2: no reference."""
    ref = torch.where(torch.isfinite(target_chi2), target_chi2, torch.ones_like(target_chi2)).clamp_min(1.0)
    ref = torch.where(synthetic.to(torch.bool), torch.ones_like(ref), ref)
    return torch.where(ref > 1.0, (chi2 / ref).clamp_min(1.0), chi2)
