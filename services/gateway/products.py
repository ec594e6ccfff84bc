"""What a render hands back: PNG, FITS with the sky's WCS, the spread overlay and the
survey | rendering side-by-side. Every product says it is an AI rendering: the PNGs in a
visible label and in their text chunks, the FITS in its header.

Arrays here are in FITS order (row 0 at the bottom, as the WCS counts them); PNGs are written
top row first, as images are shown.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

DISCLAIMER = "AI rendering, not an observation"
# Spread (per-pixel standard deviation between samples, display units 0..1) at which the
# overlay is fully opaque: an absolute scale, so overlays of two renders compare.
SPREAD_FULL_SCALE = 0.15
SIDE_BY_SIDE_MAX_PX = 1024


def _to_uint8(image01: np.ndarray) -> np.ndarray:
    """(3, h, w) 0..1 in FITS order (NaN: no data) -> (h, w, 3) uint8, top row first."""
    rgb = np.nan_to_num(np.asarray(image01, dtype=np.float32), nan=0.0).clip(0.0, 1.0)
    return np.round(rgb * 255.0).astype(np.uint8).transpose(1, 2, 0)[::-1]


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def _label(image: Image.Image, text: str) -> None:
    """A small visible label, bottom left, on a dark box so it reads on any sky."""
    draw = ImageDraw.Draw(image, "RGBA")
    size = max(9, min(image.width, image.height) // 48)
    font = _font(size)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    pad = max(2, size // 4)
    x, y = pad, image.height - (bottom - top) - 3 * pad
    draw.rectangle((x - pad, y - pad + top, x + right - left + pad, y + bottom + pad), fill=(0, 0, 0, 150))
    draw.text((x, y), text, font=font, fill=(235, 235, 235, 255))


def _png(image: Image.Image, text: dict[str, str]) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        info.add_itxt(key, value)
    out = io.BytesIO()
    image.save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def png_text(provenance: dict[str, Any]) -> dict[str, str]:
    """The PNG text chunks: the disclaimer, credits and the provenance, machine-readable."""
    return {
        "Title": f"{provenance.get('target', 'sky field')} - {DISCLAIMER}",
        "Disclaimer": DISCLAIMER,
        "Software": f"Prettier Space Survey {provenance.get('software_version', '')}".strip(),
        "Copyright": "; ".join(provenance.get("credits", [])),
        "Provenance": json.dumps(provenance, sort_keys=True),
    }


def rendering_png(image01: np.ndarray, provenance: dict[str, Any]) -> bytes:
    image = Image.fromarray(_to_uint8(image01), "RGB")
    _label(image, DISCLAIMER)
    return _png(image, png_text(provenance))


def spread_png(spread: np.ndarray, provenance: dict[str, Any]) -> bytes:
    """RGBA overlay (same size as the rendering): magenta whose opacity grows with the spread,
    transparent where the samples agree (the model recovers rather than invents)."""
    alpha = np.nan_to_num(spread / SPREAD_FULL_SCALE, nan=0.0).clip(0.0, 1.0)[::-1]
    rgba = np.zeros((*alpha.shape, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 2] = 255, 255
    rgba[..., 3] = np.round(alpha * 255.0).astype(np.uint8)
    text = png_text(provenance) | {
        "Description": f"per-pixel spread between {provenance.get('samples', 0)} samples; "
        f"opaque at {SPREAD_FULL_SCALE} (display units)"
    }
    return _png(Image.fromarray(rgba, "RGBA"), text)


def side_by_side_png(survey01: np.ndarray, image01: np.ndarray, provenance: dict[str, Any]) -> bytes:
    """Survey cutout | rendering, each at most SIDE_BY_SIDE_MAX_PX wide, with captions and credits."""
    rendering = Image.fromarray(_to_uint8(image01), "RGB")
    factor = min(1.0, SIDE_BY_SIDE_MAX_PX / max(rendering.size))
    size = (max(1, round(rendering.width * factor)), max(1, round(rendering.height * factor)))
    rendering = rendering.resize(size, Image.Resampling.LANCZOS)
    survey = Image.fromarray(_to_uint8(survey01), "RGB").resize(size, Image.Resampling.NEAREST)
    caption, footer, gap = 26, 40, 8
    canvas = Image.new("RGB", (size[0] * 2 + gap, size[1] + caption + footer), (18, 18, 18))
    canvas.paste(survey, (0, caption))
    canvas.paste(rendering, (size[0] + gap, caption))
    draw = ImageDraw.Draw(canvas)
    font = _font(13)
    target = provenance.get("target", "")
    draw.text(
        (6, 6), f"{provenance.get('survey', 'survey')} (observed) {target}".strip(), fill=(230, 230, 230), font=font
    )
    model = f"{provenance.get('model_name', '')} v{provenance.get('model_version', '')}"
    draw.text((size[0] + gap + 6, 6), f"{DISCLAIMER} ({model})", fill=(255, 210, 120), font=font)
    credits = "; ".join(provenance.get("credits", []))
    draw.text((6, caption + size[1] + 6), f"Credit: {credits}"[:220], fill=(190, 190, 190), font=_font(11))
    return _png(canvas, png_text(provenance))


def rendering_fits(
    image01: np.ndarray, wcs: WCS, provenance: dict[str, Any], spread: np.ndarray | None = None
) -> bytes:
    """PRIMARY: the rendering (3, h, w) float32 0..1 with the output grid's WCS; SPREAD (when
    samples > 1): the per-pixel spread on the same grid."""
    header = wcs.to_header()
    header["BUNIT"] = ("", "display values 0..1 (not calibrated flux)")
    header["ORIGIN"] = "Prettier Space Survey gateway"
    header["DISCLAIM"] = (DISCLAIMER, "this is not an observation")
    header["MODEL"] = (str(provenance.get("model_name", "")), "generator model")
    header["MODELVER"] = (str(provenance.get("model_version", "")), "Triton model version")
    header["SURVEY"] = (str(provenance.get("survey", "")), "survey the input pixels come from")
    header["FIDELITY"] = (float(provenance.get("parameters", {}).get("fidelity", 0.0)), "0 vivid .. 1 faithful")
    header["NSAMPLES"] = (int(provenance.get("samples", 1)), "samples averaged")
    for credit in provenance.get("credits", []):
        header["COMMENT"] = f"Credit: {credit}"
    header["COMMENT"] = DISCLAIMER
    header["HISTORY"] = json.dumps(provenance, sort_keys=True)[:4000]
    hdus: list[Any] = [fits.PrimaryHDU(np.asarray(image01, dtype=np.float32), header=header)]
    if spread is not None:
        spread_header = wcs.to_header()
        spread_header["BUNIT"] = ("", "std between samples, display units")
        spread_header["COMMENT"] = "where the model invents rather than recovers detail"
        hdus.append(fits.ImageHDU(np.asarray(spread, dtype=np.float32), header=spread_header, name="SPREAD"))
    out = io.BytesIO()
    fits.HDUList(hdus).writeto(out)
    return out.getvalue()
