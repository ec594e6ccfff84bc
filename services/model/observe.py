"""The survey observation model: how a sharp image would have looked to the survey.

Used three ways, so that they agree by construction: `degrade` synthesises survey-like inputs
with it, the trainer's consistency loss re-observes the generator's output with it, and the
evaluation reports the same reduced chi^2.

Display stretch (documented, shared): display d in [0, 1] and linear flux f (white = 1) are
related by the asinh stretch of Lupton et al. with a softening s relative to white,

    d = asinh(f / s) / asinh(1 / s),        f = s * sinh(d * asinh(1 / s)).

Outreach images (the generator's output) are read with `SOFTENING`. A survey's stretch is not
known (photographic plates, HiPS colour cuts), so the consistency fit tries each stretch of
`INPUT_STRETCHES` (asinh softenings, photographic curve widths, power laws) for the input and
keeps the best. Each is defined up to an affine map of the flux, which the colour calibration
fits: any asinh stretch with its black point below white, d = asinh((F - F0) / S) / asinh(W / S),
is `stretch` with s = S / W applied to (F - F0) / W.

The consistency fit also tries a few PSF wings (`PSF_BETAS`) at the stated FWHM: real PSFs'
wings are rarely known, and a wrong guess on a bright core would read as a contradiction.

Noise model: additive Gaussian, constant per channel in the survey's *display* units (what
`estimate_noise` measures on the background and what the batches carry as ``noise_sigma``);
propagated to linear flux with the derivative of the stretch. Photographic grain is
multiplicative in exposure, i.e. close to constant in a log-like display; for a CCD asinh
display it is the background noise, an upper bound on bright pixels.

PSF: Moffat profile (1 + r^2 / alpha^2)^-beta, beta = `PSF_BETA` unless given (inf = Gaussian).
The survey pixel integrates the light over its area: re-observing blurs at the fine resolution,
then averages scale x scale blocks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

SOFTENING = 0.02  # outreach stretch: sky noise just visible, white at the brightest 0.3 % (universe.outreach)
# The input stretches the consistency fit tries (kind, parameter), each up to an affine map:
# asinh (CCD HiPS, softening relative to white), photographic (logistic in log exposure, i.e.
# flux ~ odds^w, w = curve width in e-folds of exposure) and power (flux ~ display^(1/gamma)).
INPUT_STRETCHES: tuple[tuple[str, float], ...] = (
    *(("asinh", round(0.003 * (1.0 / 0.003) ** (i / 15), 5)) for i in range(16)),  # 0.003 ... 1, x1.47 apart
    *(("photographic", round(0.7 + 0.8 * i / 7, 4)) for i in range(8)),  # 0.7 ... 1.5 e-folds
    *(("power", g) for g in (0.25, 0.33, 0.42, 0.52, 0.65)),
)
PSF_BETA = 3.0  # typical ground-based seeing wings (SDSS ~3.2, DSS ~2.6 in the local universe)
PSF_BETAS: tuple[float, ...] = (2.5, 3.2, 4.5)  # the wings the consistency fit tries (rarely known)
CENSOR_LOW = 0.5 / 255.0  # input pixels at or below: clipped to black, value unknown
CENSOR_HIGH = 254.5 / 255.0  # at or above: saturated
RIDGE = 1e-6  # relative ridge of the calibration fit (grey outputs make its colour regressors collinear)
N_FITTED = 3 * 6 + 2  # calibration parameters, plus the choice of stretch and of PSF wings
SELECT_PIXELS = 256  # pixels the choice of stretch and PSF looks at (at least)
MIN_FITTED_VALUES = 4 * N_FITTED  # fewer valid pixel values than this: chi^2 is NaN (undefined)


def stretch(linear: Tensor, softening: float | Tensor = SOFTENING) -> Tensor:
    """Linear flux (white = 1) -> display [0, 1] (not clipped above 1)."""
    s = torch.as_tensor(softening, dtype=linear.dtype, device=linear.device)
    return torch.asinh(linear.clamp_min(0.0) / s) / torch.asinh(1.0 / s)


def linearise(display: Tensor, softening: float | Tensor = SOFTENING) -> Tensor:
    """Display [0, 1] -> linear flux (white = 1): the inverse of `stretch`."""
    s = torch.as_tensor(softening, dtype=display.dtype, device=display.device)
    return s * torch.sinh(display * torch.asinh(1.0 / s))


def linearise_slope(display: Tensor, softening: float | Tensor = SOFTENING) -> Tensor:
    """d(linear)/d(display): carries display noise to linear flux."""
    s = torch.as_tensor(softening, dtype=display.dtype, device=display.device)
    k = torch.asinh(1.0 / s)
    return s * k * torch.cosh(display * k)


def linearise_input(display: Tensor, kind: str, p: float) -> tuple[Tensor, Tensor]:
    """A survey display -> (flux up to an affine map, d flux / d display) for one stretch of
    `INPUT_STRETCHES`. Meant for uncensored pixels (0 < d < 1)."""
    if kind == "asinh":
        return linearise(display, p), linearise_slope(display, p)
    d = display.clamp(1e-4, 1.0 - 1e-4)
    if kind == "photographic":
        y = (d / (1.0 - d)) ** p
        return y, p * y / (d * (1.0 - d))
    if kind == "power":
        y = d ** (1.0 / p)
        return y, y / (p * d)
    raise ValueError(f"unknown stretch {kind!r}")


def moffat_kernel(fwhm_px: Tensor, radius: int, beta: float | Tensor = PSF_BETA) -> Tensor:
    """[B] FWHM (pixels of the grid it is applied on) -> [B, 2r+1, 2r+1] kernels summing to 1."""
    fwhm = fwhm_px.reshape(-1, 1, 1).to(torch.float32).clamp_min(1e-3)
    r = torch.arange(-radius, radius + 1, dtype=torch.float32, device=fwhm.device)
    r2 = r[None, :, None] ** 2 + r[None, None, :] ** 2
    b = torch.as_tensor(beta, dtype=torch.float32, device=fwhm.device).reshape(-1, 1, 1).expand_as(fwhm)
    gaussian = torch.exp(-4.0 * math.log(2.0) * r2 / fwhm**2)
    b_safe = torch.where(torch.isfinite(b), b, torch.full_like(b, 3.0))
    alpha2 = (fwhm / (2.0 * torch.sqrt(2.0 ** (1.0 / b_safe) - 1.0))) ** 2
    moffat = (1.0 + r2 / alpha2) ** (-b_safe)
    k = torch.where(torch.isfinite(b), moffat, gaussian)
    return k / k.sum(dim=(1, 2), keepdim=True)


def kernel_radius(max_fwhm_px: float) -> int:
    """Radius holding all but ~0.3 % of a beta-3 Moffat's light."""
    return math.ceil(4.0 * max_fwhm_px) + 1


def blur(image: Tensor, fwhm_px: Tensor, beta: float | Tensor = PSF_BETA) -> Tensor:
    """[B, C, H, W] convolved with each sample's PSF (FFT: survey PSFs are tens of fine pixels
    wide). Edges replicate, so a tile's border is an approximation - callers leave it out."""
    b, _c, h, w = image.shape
    radius = kernel_radius(float(fwhm_px.max()))
    kernel = moffat_kernel(fwhm_px.to(image.device), radius, beta)  # [B, k, k]
    padded = F.pad(image.float(), (radius, radius, radius, radius), mode="replicate")
    hp, wp = padded.shape[-2:]
    frame = torch.zeros(b, hp, wp, device=image.device)
    frame[:, : 2 * radius + 1, : 2 * radius + 1] = kernel
    frame = torch.roll(frame, shifts=(-radius, -radius), dims=(1, 2))  # kernel centre at (0, 0)
    spectrum = torch.fft.rfft2(padded) * torch.fft.rfft2(frame)[:, None]
    out = torch.fft.irfft2(spectrum, s=(hp, wp))
    return out[..., radius : radius + h, radius : radius + w]


def reobserve(
    output_display: Tensor,
    psf_fwhm_px: Tensor,
    scale: int,
    beta: float | Tensor = PSF_BETA,
    softening: float = SOFTENING,
) -> Tensor:
    """[B, 3, H, W] display (the generator's output) -> [B, 3, H/scale, W/scale] linear flux on
    the survey grid: linearise, blur by the survey PSF (FWHM in *survey* pixels), area-average."""
    if output_display.shape[-1] % scale or output_display.shape[-2] % scale:
        raise ValueError(f"output size {tuple(output_display.shape[-2:])} is not a multiple of {scale}")
    with torch.autocast(device_type=output_display.device.type, enabled=False):
        linear = linearise(output_display.float(), softening)
        fine = blur(linear, psf_fwhm_px.float() * scale, beta)
        return F.avg_pool2d(fine, scale)


def estimate_noise(display: Tensor, mask: Tensor | None = None, block: int = 8) -> Tensor:
    """[B, 3, h, w] display -> [B, 3] background noise sigma in display units.

    The image is cut into block x block tiles; in each, a plane is fitted (sky gradients,
    smooth galaxy light) and the robust sigma (1.4826 MAD) of the residual taken. Blocks on
    sources have extra structure, so the noise is the 25th percentile over the blocks (x 1.06:
    a pure-noise block's estimate scatters, its 25th percentile is that much low). Blocks with
    an invalid, black-clipped or saturated pixel are left out. Noise correlated over a pixel or
    so (resampled HiPS) is kept, unlike pixel-difference estimators which miss it."""
    b, c, h, w = display.shape
    k = max(4, min(block, h // 2, w // 2))
    valid = torch.ones(b, 1, h, w, dtype=torch.bool, device=display.device) if mask is None else mask > 0.5
    ok = valid & (display > CENSOR_LOW) & (display < CENSOR_HIGH)  # [B, 3, h, w]
    tiles = F.unfold(display.float().reshape(b * c, 1, h, w), k, stride=k)  # [B*3, k*k, n]
    tiles_ok = F.unfold(ok.expand(b, c, h, w).float().reshape(b * c, 1, h, w), k, stride=k).amin(dim=1)  # [B*3, n]
    yy, xx = torch.meshgrid(torch.arange(k, dtype=torch.float32), torch.arange(k, dtype=torch.float32), indexing="ij")
    design = torch.stack([torch.ones(k * k), xx.flatten() - (k - 1) / 2, yy.flatten() - (k - 1) / 2], dim=1)
    design = design.to(display.device)
    resid = tiles - design @ torch.linalg.pinv(design) @ tiles  # plane removed per block
    med = resid.median(dim=1, keepdim=True).values
    sigma = 1.4826 * (resid - med).abs().median(dim=1).values * math.sqrt(k * k / (k * k - 3.0))  # [B*3, n]
    out = torch.zeros(b * c, device=display.device)
    for i in range(b * c):
        good = sigma[i][tiles_ok[i] > 0.5]
        if good.numel() > 0:
            out[i] = 1.06 * torch.quantile(good, 0.25)
    return out.reshape(b, c).clamp_min(1.0 / 255.0 / math.sqrt(12.0))  # never below 8-bit quantisation


def _calibrated_chi2(x: Tensor, y: Tensor, w: Tensor, coords: Tensor) -> Tensor:
    """Weighted least squares, per sample and channel c: y_c ~ A_c . x + b_c + g_c . (X, Y) - a
    3x3 colour matrix (survey plates and outreach filters mix colours differently), an offset
    (sky) and a sky gradient (plates vignette, scattered light). x: [..., B, 3, N]; y, w:
    [..., B, 3, N] (w = mask / sigma^2 per channel of y); coords [2, N]. Returns the weighted
    sum of squared residuals [..., B], in float64 (the normal equations need it)."""
    n = x.shape[-1]
    extra = torch.cat([torch.ones(1, n, device=x.device, dtype=torch.float64), coords.double()], dim=0)
    design = torch.cat([x.double(), extra.expand(*x.shape[:-2], 3, n)], dim=-2)  # [..., B, 6, N]
    w64, y64 = w.double(), y.double()
    # Normal equations per output channel: (D W D^T) p = D W y, with a ridge relative to each
    # regressor's own scale (grey outputs make the colour regressors collinear).
    dw = design.unsqueeze(-3) * w64.unsqueeze(-2)  # [..., B, C, 6, N]
    gram = dw @ design.unsqueeze(-3).transpose(-1, -2)  # [..., B, C, 6, 6]
    rhs = dw @ y64.unsqueeze(-1)  # [..., B, C, 6, 1]
    diag = gram.diagonal(dim1=-2, dim2=-1)
    params = torch.linalg.solve(gram + torch.diag_embed(RIDGE * diag + 1e-12), rhs)  # [..., B, C, 6, 1]
    model = (params.transpose(-1, -2) @ design.unsqueeze(-3)).squeeze(-2)  # [..., B, C, N]
    return (w64 * (y64 - model) ** 2).sum(dim=(-1, -2))


def consistency_chi2(
    reobserved_linear: Tensor | Sequence[Tensor],
    input_display: Tensor,
    noise_sigma: Tensor,
    mask: Tensor | None = None,
    stretches: Sequence[tuple[str, float]] = INPUT_STRETCHES,
) -> Tensor:
    """Reduced chi^2 [B] of the survey input against the re-observed output, after the best
    calibration (a 3x3 colour matrix, an offset and a sky gradient per channel) and the best input
    stretch of `stretches` (and the best of several re-observations, when a sequence is given:
    one per candidate PSF).

    reobserved_linear [B, 3, h, w] (from `reobserve`), input_display [B, 3, h, w] in [0, 1],
    noise_sigma [B, 3] display units (or [B, 3, h, w] per pixel, when known), mask [B, 1, h, w]
    (1 = valid). Censored input pixels (clipped black or saturated) are left out. ~1: the output
    explains the input within its noise; >> 1: it contradicts it; << 1: it reproduces the noise itself.
    NaN where too few valid pixels remain. Differentiable in reobserved_linear."""
    candidates = [reobserved_linear] if isinstance(reobserved_linear, Tensor) else list(reobserved_linear)
    with torch.autocast(device_type=input_display.device.type, enabled=False):
        d = input_display.float()
        keep = (d > CENSOR_LOW) & (d < CENSOR_HIGH) & torch.isfinite(d)
        if mask is not None:
            keep = keep & (mask > 0.5)
        d = torch.where(keep, d, torch.full_like(d, 0.5)).flatten(2)
        keep = keep.flatten(2).float()
        b, _, h, w_px = input_display.shape
        yy, xx = torch.meshgrid(
            torch.linspace(-1.0, 1.0, h, device=d.device),
            torch.linspace(-1.0, 1.0, w_px, device=d.device),
            indexing="ij",
        )
        coords = torch.stack([xx.flatten(), yy.flatten()])
        sigma = noise_sigma.float().clamp_min(1e-4)
        sigma = sigma.flatten(2) if sigma.dim() == 4 else sigma[..., None]
        ys, ws = [], []
        for kind, p in stretches:
            y, slope = linearise_input(d, kind, p)
            ys.append(y)
            ws.append(keep / (sigma * slope) ** 2)
        y_all, w_all = torch.stack(ys), torch.stack(ws)  # [S, B, 3, N]
        x_all = torch.stack([c.float().flatten(2) for c in candidates])  # [K, B, 3, N]
        dof = (keep.sum(dim=(1, 2)) - N_FITTED).clamp_min(1.0).double()
        # Pick the best stretch and PSF per sample without a graph (the minimum's gradient is the
        # chosen branch's), then fit that one with gradients: the same value, a fraction of the cost.
        # The choice looks at every 2nd-4th pixel (at least SELECT_PIXELS of them).
        step = max(1, int(math.sqrt(h * w_px / SELECT_PIXELS)))
        sub = torch.arange(0, h, step, device=d.device)[:, None] * w_px + torch.arange(0, w_px, step, device=d.device)
        sub = sub.flatten()
        with torch.no_grad():
            chi2_all = torch.stack(
                [
                    _calibrated_chi2(x_all[k][..., sub], y_all[..., sub], w_all[..., sub], coords[:, sub])
                    for k in range(len(candidates))
                ]
            )
            flat = chi2_all.permute(2, 0, 1).reshape(b, -1)  # [B, K * S]
            choice = flat.argmin(dim=1)
        k_idx, s_idx = choice // len(stretches), choice % len(stretches)
        rows = torch.arange(b, device=d.device)
        best = (_calibrated_chi2(x_all[k_idx, rows], y_all[s_idx, rows], w_all[s_idx, rows], coords) / dof).float()
        # Too few pixels to say anything (tiny tile, wide PSF, mostly masked): undefined. `where`
        # keeps the gradient finite (zero) for those samples.
        enough = keep.sum(dim=(1, 2)) >= MIN_FITTED_VALUES
        return torch.where(enough, best, torch.full_like(best, math.nan))


EDGE_FWHM = 1.5  # survey pixels closer than this many FWHM to a tile edge see light from outside it


def interior_mask(mask: Tensor, psf_fwhm_px: Tensor, edge_fwhm: float = EDGE_FWHM) -> Tensor:
    """[B, 1, h, w] mask without the border whose re-observation needs pixels beyond the tile
    (or beyond an invalid region): per sample, erode by ceil(edge_fwhm * FWHM) pixels."""
    out = torch.empty_like(mask)
    b, _, _h, _w = mask.shape
    for i in range(b):
        r = math.ceil(edge_fwhm * float(psf_fwhm_px[i]))
        m = (mask[i : i + 1] > 0.5).float()
        if r > 0:
            m = -F.max_pool2d(-F.pad(m, (r, r, r, r), value=0.0), 2 * r + 1, stride=1)
        out[i : i + 1] = m.to(mask.dtype)
    return out


def observation_chi2(
    output_display: Tensor,
    input_display: Tensor,
    noise_sigma: Tensor,
    psf_fwhm_px: Tensor,
    input_mask: Tensor | None,
    scale: int,
    betas: Sequence[float] = PSF_BETAS,
) -> Tensor:
    """Reduced chi^2 [B] of the survey input given the output (re-observed), on the interior
    of the valid input pixels: what the trainer optimises and the evaluation reports."""
    reobserved = [reobserve(output_display, psf_fwhm_px, scale, beta) for beta in betas]
    if input_mask is None:
        input_mask = torch.ones_like(input_display[:, :1])
    return consistency_chi2(reobserved, input_display, noise_sigma, interior_mask(input_mask, psf_fwhm_px))
