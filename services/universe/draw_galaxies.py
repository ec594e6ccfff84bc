"""Galaxies on a grid, in the three catalogue bands (b, g, r), linear flux.

Regimes by apparent size and brightness on the grid:
- unresolved (half-light radius below a quarter of the PSF): blurred points;
- small and faint (shape barely measurable): vectorised PSF-widened ellipses (`points`);
- small and bright (a few pixels): GalSim, Sérsic n=4 bulge + exponential disk, each sheared to its
  axis ratio, rotated to its position angle through the grid's local Jacobian, convolved
  with the PSF core and the pixel (FFT);
- resolved (>= RESOLVED_PX): evaluated analytically on the pixels so the disk can carry what
  GalSim has no profile for: logarithmic spiral arms, star-forming knots along them, dust
  lanes; then blurred by the PSF.
"""

from __future__ import annotations

import galsim
import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.special import gamma, gammaincinv

from services.universe.grid import Grid
from services.universe.noise import fbm
from services.universe.points import PSF, paint_ellipses, paint_points

RESOLVED_PX = 6.0  # half-light radius in pixels from which structure is drawn
KNOT_BV, KNOT_VR = -0.15, 0.05  # young star-forming regions: blue
_GSPARAMS = galsim.GSParams(maximum_fft_size=2048, folding_threshold=1e-2)


def band_fluxes(cols: dict[str, np.ndarray], zero_point: float = 25.0) -> np.ndarray:
    """(3, N) total flux in b, g, r (flux 1 = magnitude zero_point)."""
    return np.stack([10 ** (-0.4 * (cols[f"mag_{band}"].astype(float) - zero_point)) for band in "bgr"])


def component_shares(cols: dict[str, np.ndarray], i: int) -> np.ndarray:
    """(3,) bulge share of the light in b, g, r."""
    fb = float(cols["bulge_frac"][i])
    bulge = np.array([10 ** (-0.4 * cols["bulge_bv"][i]), 1.0, 10 ** (0.4 * cols["bulge_vr"][i])])
    disk = np.array([10 ** (-0.4 * cols["disk_bv"][i]), 1.0, 10 ** (0.4 * cols["disk_vr"][i])])
    return fb * bulge / np.maximum(fb * bulge + (1 - fb) * disk, 1e-12)


def knot_shares(cols: dict[str, np.ndarray], i: int) -> np.ndarray:
    """(3,) share of the disk light in knots, in b, g, r (knots are bluer than the disk)."""
    kf = float(cols["knot_frac"][i])
    rel = np.array([10 ** (-0.4 * (KNOT_BV - cols["disk_bv"][i])), 1.0, 10 ** (0.4 * (KNOT_VR - cols["disk_vr"][i]))])
    return np.clip(kf * rel, 0.0, 0.9)


def draw_galaxies(
    planes: np.ndarray,
    grid: Grid,
    cols: dict[str, np.ndarray],
    psf: PSF,
    threshold: float,
    structure_flux: float,
    zero_point: float = 25.0,
) -> None:
    """Add the galaxies in cols to planes (3, H, W) in place. Galaxies fainter than
    structure_flux (S/N too low for details to show) are drawn as PSF-widened ellipses."""
    n = cols["ra"].size
    if n == 0:
        return
    x, y = grid.to_pixels(cols["ra"], cols["dec"])
    fluxes = band_fluxes(cols, zero_point)
    fwhm = psf.effective_fwhm(grid.pixel_arcsec)
    size = cols["size_arcsec"].astype(float)
    size_px = size / grid.pixel_arcsec
    brightest = fluxes.max(axis=0)
    tiny = size < 0.25 * fwhm
    paint_points(planes, grid, x[tiny], y[tiny], fluxes[:, tiny], psf, threshold, extra_fwhm=size[tiny])
    # Small or faint: vectorised ellipses; GalSim only where a shape is well measured.
    simple = ~tiny & (size_px < RESOLVED_PX) & (brightest < structure_flux)
    if simple.any():
        n_eff = 1.0 + 3.0 * cols["bulge_frac"][simple].astype(float)
        q_eff = np.where(cols["bulge_frac"][simple] > 0.5, cols["bulge_q"][simple], cols["disk_q"][simple]).astype(
            float
        )
        paint_ellipses(
            planes,
            grid,
            x[simple],
            y[simple],
            fluxes[:, simple],
            size[simple],
            q_eff,
            cols["pa_deg"][simple].astype(float),
            n_eff,
            psf,
        )
    rest = np.flatnonzero(~tiny & ~simple)
    if rest.size == 0:
        return
    jacobians = grid.local_jacobians(cols["ra"][rest], cols["dec"][rest])
    # GalSim's FFT is sized by the PSF; on grids much coarser than the PSF it would be
    # enormous for nothing, and direct evaluation is as good there.
    use_galsim = grid.pixel_arcsec <= 1.5 * psf.fwhm_arcsec
    for j, i in enumerate(rest):
        if size_px[i] < RESOLVED_PX and use_galsim:
            try:
                _draw_galsim(planes, grid, cols, i, x[i], y[i], jacobians[j], fluxes[:, i], psf)
                continue
            except galsim.GalSimFFTSizeError:
                pass  # a profile GalSim would need a huge FFT for: evaluate it directly instead
        _draw_resolved(planes, grid, cols, i, x[i], y[i], jacobians[j], fluxes[:, i], psf, threshold)


def _galsim_beta(pa_deg: float) -> galsim.Angle:
    # World coordinates here are (u, v) = (east, north) arcsec; GalSim angles run
    # counter-clockwise from +u, so a major axis at PA (east of north) sits at 90 - PA.
    return (90.0 - pa_deg) * galsim.degrees


def _draw_galsim(
    planes: np.ndarray,
    grid: Grid,
    cols: dict[str, np.ndarray],
    i: int,
    x: float,
    y: float,
    jac: np.ndarray,
    flux: np.ndarray,
    psf: PSF,
) -> None:
    h, w = grid.shape
    beta = _galsim_beta(float(cols["pa_deg"][i]))
    # Truncated at 5 half-light radii: keeps the FFT small (de Vaucouleurs wings otherwise
    # ask for enormous ones) at the cost of the faintest outskirts, below the noise anyway.
    bulge_hlr = float(cols["bulge_hlr"][i])
    bulge = galsim.DeVaucouleurs(half_light_radius=bulge_hlr, trunc=5.0 * bulge_hlr, gsparams=_GSPARAMS)
    bulge = bulge.shear(q=float(cols["bulge_q"][i]), beta=beta)
    disk = galsim.Exponential(half_light_radius=float(cols["disk_hlr"][i]), gsparams=_GSPARAMS)
    disk = disk.shear(q=float(cols["disk_q"][i]), beta=beta)
    # A Gaussian of the PSF's FWHM: its Fourier transform is analytic (a Moffat's costs
    # ~50 ms per draw), and the Moffat wings are irrelevant for a few-pixel galaxy.
    kernel = galsim.Gaussian(fwhm=psf.fwhm_arcsec, gsparams=_GSPARAMS)
    radius = int(np.ceil((4.0 * float(cols["size_arcsec"][i]) + 2.0 * psf.fwhm_arcsec) / grid.pixel_arcsec)) + 2
    ix, iy = int(np.rint(x)), int(np.rint(y))
    bounds = galsim.BoundsI(ix - radius, ix + radius, iy - radius, iy + radius)
    # Stamp pixel (i, j) is grid pixel (i, j), 0-based, so `center` is the catalogue position.
    wcs = galsim.JacobianWCS(jac[0, 0], jac[0, 1], jac[1, 0], jac[1, 1])
    shares = component_shares(cols, i)
    images = []
    for profile in (bulge, disk):
        stamp = galsim.ImageD(bounds, wcs=wcs)
        galsim.Convolve(profile, kernel).drawImage(image=stamp, center=galsim.PositionD(x, y))
        images.append(stamp.array)
    x0, y0 = ix - radius, iy - radius
    sx0, sx1 = max(0, -x0), min(2 * radius + 1, w - x0)
    sy0, sy1 = max(0, -y0), min(2 * radius + 1, h - y0)
    if sx0 >= sx1 or sy0 >= sy1:
        return
    for b in range(3):
        stamp = flux[b] * (shares[b] * images[0] + (1.0 - shares[b]) * images[1])
        planes[b, y0 + sy0 : y0 + sy1, x0 + sx0 : x0 + sx1] += stamp[sy0:sy1, sx0:sx1]


def _sersic_b(n: float) -> float:
    return float(gammaincinv(2.0 * n, 0.5))


def _sersic(r: np.ndarray, hlr: float, n: float) -> np.ndarray:
    """Sérsic surface brightness normalised to unit total flux (circular, r in arcsec)."""
    b = _sersic_b(n)
    norm = 2.0 * np.pi * n * hlr**2 * np.exp(b) * gamma(2.0 * n) / b ** (2.0 * n)
    return np.exp(-b * ((r / hlr) ** (1.0 / n) - 1.0)) / norm


def _draw_resolved(
    planes: np.ndarray,
    grid: Grid,
    cols: dict[str, np.ndarray],
    i: int,
    x: float,
    y: float,
    jac: np.ndarray,
    flux: np.ndarray,
    psf: PSF,
    threshold: float,
) -> None:
    pix = grid.pixel_arcsec
    disk_hlr, bulge_hlr = float(cols["disk_hlr"][i]), float(cols["bulge_hlr"][i])
    fwhm_px = psf.effective_fwhm(pix) / pix
    blur = fwhm_px / 2.355
    # Extent: out to where the disk falls below the drawing threshold (at most 8 hlr).
    peak = float(flux.max()) / (2 * np.pi * (disk_hlr / 1.678) ** 2)
    reach = disk_hlr / 1.678 * np.log(max(peak / threshold, 1.0)) + 3 * psf.fwhm_arcsec
    radius_px = min(8.0 * max(disk_hlr, bulge_hlr), max(reach, 2.0 * disk_hlr)) / pix + 3 * blur + 2
    box = grid.overlap_box(x, y, radius_px)
    if box is None:
        return
    x0, x1, y0, y1 = box
    pad = int(np.ceil(3 * blur)) + 1  # margin so the PSF blur has what lies outside the grid
    yy, xx = np.mgrid[y0 - pad : y1 + pad, x0 - pad : x1 + pad].astype(np.float32)
    dx, dy = xx - np.float32(x), yy - np.float32(y)
    east = jac[0, 0] * dx + jac[0, 1] * dy
    north = jac[1, 0] * dx + jac[1, 1] * dy
    pa = np.radians(float(cols["pa_deg"][i]))
    # Galaxy frame: a along the major axis, c along the minor axis (both arcsec, on the sky).
    a = east * np.sin(pa) + north * np.cos(pa)
    c = east * np.cos(pa) - north * np.sin(pa)
    q_d, q_b = float(cols["disk_q"][i]), float(cols["bulge_q"][i])
    r_disk = np.hypot(a, c / q_d)  # radius in the disk plane (deprojected)
    area = abs(np.linalg.det(jac))  # arcsec^2 per pixel
    bulge = _sersic(np.hypot(a, c / q_b), bulge_hlr, 4.0) * (area / q_b)
    disk = _sersic(r_disk, disk_hlr, 1.0) * (area / q_d)

    seed = int(cols["seed"][i]) % (2**61)
    # Texture coordinates: the disk plane in units of the disk half-light radius.
    u, v = a / disk_hlr, c / q_d / disk_hlr
    finest = 1.2 * pix / disk_hlr
    late = str(cols["subtype"][i]) in ("spiral", "disk")
    theta = np.arctan2(v, u)
    arms = int(cols["arms"][i])
    tau = np.zeros_like(r_disk)  # dust optical depth in g
    if late:
        # Flocculent structure: the disk light is clumpy on all scales down to the pixel.
        clumps = fbm(u, v, seed, 0.3, finest)
        disk = disk * np.exp(1.6 * clumps - 0.3)
        patch = np.clip(fbm(u, v, seed + 1, 0.2, finest) + 0.15, 0.0, None)
        tau = tau + 2.0 * patch * np.exp(-r_disk / (2.0 * disk_hlr))
    if arms > 0:
        pitch = np.radians(float(cols["pitch_deg"][i]))
        phase = np.radians(float(cols["arm_phase"][i]))
        r0 = max(bulge_hlr, 0.2 * disk_hlr)
        # Logarithmic spiral, its phase wobbling a little so the arms are not geometric.
        wobble = 0.35 * fbm(u, v, seed + 2, 0.8, 0.05)
        wind = arms * (theta - np.log(np.maximum(r_disk, 1e-3) / r0) / np.tan(pitch) - phase) + wobble
        arm = ((1.0 + np.cos(wind)) / 2.0) ** 4 / 0.2734  # narrow arms, mean 1 over a turn
        strength = float(cols["arm_strength"][i]) * (1.0 - np.exp(-((r_disk / (1.5 * r0)) ** 2)))
        disk = disk * ((1.0 - strength) + strength * arm)
        # Dust lanes on the inner (trailing) edge of each arm, broken up by the texture.
        lane = ((1.0 + np.cos(wind - 0.55)) / 2.0) ** 10
        tau = tau + 2.2 * strength * lane * np.exp(-r_disk / (2.5 * disk_hlr)) * (0.6 + 0.4 * np.abs(wobble) / 0.35)
    if q_d < 0.35 and float(cols["bulge_frac"][i]) < 0.7:
        # Edge-on disks show their dust lane along the major axis, slightly off-centre.
        thickness = max(0.05 * disk_hlr, pix)
        tau = tau + 2.0 * np.exp(-(((c - 0.3 * thickness) / thickness) ** 2)) * np.exp(-np.abs(a) / (3 * disk_hlr))

    knots = _knots(np.random.default_rng(seed), cols, i, a, c, q_d, area, arms, pix)
    shares, kshares = component_shares(cols, i), knot_shares(cols, i)
    stamp = np.empty((3, *r_disk.shape), dtype=np.float32)
    for b, extinction in enumerate((1.3, 1.0, 0.75)):  # dust reddens: more opaque in b than r
        light = shares[b] * bulge + (1 - shares[b]) * ((1 - kshares[b]) * disk + kshares[b] * knots)
        stamp[b] = flux[b] * light * np.exp(-extinction * tau)
        if blur > 0.35:
            stamp[b] = gaussian_filter(stamp[b], blur, mode="constant")
    planes[:, y0:y1, x0:x1] += stamp[:, pad : pad + (y1 - y0), pad : pad + (x1 - x0)]


def _knots(
    rng: np.random.Generator,
    cols: dict[str, np.ndarray],
    i: int,
    a: np.ndarray,
    c: np.ndarray,
    q: float,
    area: float,
    arms: int,
    pix: float,
) -> np.ndarray:
    """Star-forming knots (unit total flux): small Gaussians strung along the spiral arms
    (or scattered through the disk when there are none), each drawn on its own small box.
    Positions come from the galaxy's seed alone, so every footprint sees the same knots."""
    out = np.zeros_like(a)
    if float(cols["knot_frac"][i]) <= 0.0:
        return out
    disk_hlr, bulge_hlr = float(cols["disk_hlr"][i]), float(cols["bulge_hlr"][i])
    # Star-forming regions span ~10-300 pc: tiny against the disk; their number grows with
    # what the grid can resolve (a ground-based view shows a few blobs, Hubble hundreds).
    count = int(rng.integers(60, 120) * np.clip(disk_hlr / pix / 20.0, 1.0, 6.0))
    radius = rng.gamma(2.0, disk_hlr / 1.678, count) + 0.3 * bulge_hlr
    which = rng.integers(0, max(arms, 1), count)
    scatter = rng.normal(0.0, 0.1, count)
    uniform_theta = rng.uniform(0.0, 2 * np.pi, count)
    if arms > 0:
        pitch = np.radians(float(cols["pitch_deg"][i]))
        phase = np.radians(float(cols["arm_phase"][i]))
        r0 = max(bulge_hlr, 0.2 * disk_hlr)
        on_arm = rng.random(count) < 0.8
        theta = np.where(
            on_arm, np.log(radius / r0) / np.tan(pitch) + phase + 2 * np.pi * which / arms + scatter, uniform_theta
        )
    else:
        theta = uniform_theta
    ka, kc = radius * np.cos(theta), radius * np.sin(theta) * q
    size = np.maximum(disk_hlr * 10 ** rng.uniform(-2.8, -1.6, count), 0.6 * pix)
    weight = rng.pareto(1.8, count) + 0.1
    weight /= weight.sum()
    # Box per knot in stamp pixels: a, c are linear in the pixel indices, so invert that map.
    h, w = a.shape
    if h < 2 or w < 2:
        return out
    da_dx, dc_dx = a[0, 1] - a[0, 0], c[0, 1] - c[0, 0]
    da_dy, dc_dy = a[1, 0] - a[0, 0], c[1, 0] - c[0, 0]
    m = np.linalg.inv(np.array([[da_dx, da_dy], [dc_dx, dc_dy]]))
    px = m[0, 0] * (ka - a[0, 0]) + m[0, 1] * (kc - c[0, 0])
    py = m[1, 0] * (ka - a[0, 0]) + m[1, 1] * (kc - c[0, 0])
    reach = 4.0 * size / pix
    for k in np.flatnonzero((px > -reach) & (px < w + reach) & (py > -reach) & (py < h + reach)):
        r = reach[k]
        xa, xb = max(0, int(px[k] - r)), min(w, int(px[k] + r) + 2)
        ya, yb = max(0, int(py[k] - r)), min(h, int(py[k] + r) + 2)
        if xa >= xb or ya >= yb:
            continue
        d2 = (a[ya:yb, xa:xb] - ka[k]) ** 2 + (c[ya:yb, xa:xb] - kc[k]) ** 2
        out[ya:yb, xa:xb] += weight[k] * np.exp(-0.5 * d2 / size[k] ** 2) / (2 * np.pi * size[k] ** 2) * area
    return out
