"""What the crawler keeps of one ESA/Hubble or ESA/Webb archive image: label parsing,
the AVM (from the per-image JSON, or embedded in the file), the WCS at every downloaded
size, the skip rules, the label/AVM cross-check and the archive's ``meta.json``.

The AVM is the authority; the detail page's labels are rounded summaries of it (and
lose the minus sign between -1° and 0° of declination), so they serve as a fallback
and a cross-check only. Pure functions: the crawler hands in the DOM rows, the parsed
JSON document and image bytes.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from services.crawler.avm import (
    SpatialAvm,
    avm_from_image,
    avm_from_json,
    fits_header,
    pixel_to_world,
    rescale_header,
    unbug,
)

__all__ = [
    "EXCLUDED_TYPES_DEFAULT",
    "LICENCE",
    "LICENCE_URL",
    "MIN_FOV_ARCMIN_DEFAULT",
    "SCHEMA",
    "Extracted",
    "SpatialAvm",
    "avm_from_image",
    "avm_from_json",
    "content_hash",
    "extract",
    "image_wcs",
    "parse_dec",
    "parse_fov",
    "parse_orientation",
    "parse_ra",
    "parse_release",
    "parse_size",
    "taxonomy_text",
]

log = logging.getLogger(__name__)

SCHEMA = 1
EXCLUDED_TYPES_DEFAULT = ("Early Universe", "Planet", "Solar System")  # matched against taxonomy text parts
MIN_FOV_ARCMIN_DEFAULT = 0.5
LICENCE = "CC BY 4.0"
LICENCE_URL = "https://creativecommons.org/licenses/by/4.0/"
# Keys the crawler adds to meta.json around extract()'s output: not content.
NOT_CONTENT = frozenset({"content_hash", "images", "validators", "crawled_at", "withdrawn", "withdrawn_at"})

# How far a label may sit from the AVM it summarises (the site's rounding, plus a margin):
# RA to 0.01 s (0.15" at most), Dec to 0.01", field of view to 0.01', orientation to 0.1°.
TOLERANCE = {"ra": 0.2, "dec": 0.02, "fov_x": 0.006, "fov_y": 0.006, "north_angle": 0.06}
UNITS = {"ra": "arcsec", "dec": "arcsec", "fov_x": "arcmin", "fov_y": "arcmin", "north_angle": "deg"}


# -- label parsers -----------------------------------------------------------------------

_NUMBER = r"[-+]?\d+(?:\.\d*)?|[-+]?\.\d+"
_QUOTES = "'\u2032\u2019\u2018\"\u2033\u201d\u201c"  # primes and typographic quotes
_TIMES = "(?:x|\u00d7|\\*|by)"  # between the sides: x, the multiplication sign, *, by
_MINUS = str.maketrans({"\u2212": "-", "\u2013": "-", "\u2012": "-", "\u2010": "-", "\u00a0": " "})


def _clean(text: str) -> str:
    """Entities decoded (``&deg`` without ';' too), unicode minus and spaces normalised."""
    if not isinstance(text, str):
        raise ValueError(f"expected text, got {text!r}")
    text = re.sub(r"&(deg|nbsp|prime|Prime|quot|minus)(?![;\w])", r"&\1;", text)
    return " ".join(html.unescape(text).translate(_MINUS).split())


def _sexagesimal(text: str, what: str) -> tuple[bool, list[float]]:
    """(negative, [a, b, c]) from "a b c", "a:b:c", "a° b' c\"", "ahbmcs", 1 to 3 parts."""
    cleaned = _clean(text)
    spaced = re.sub(rf"deg(?:rees?)?|''|[°º˚dhm:{re.escape(_QUOTES)}s]", " ", cleaned, flags=re.I)
    parts = spaced.split()
    if not 1 <= len(parts) <= 3 or not all(re.fullmatch(_NUMBER, p) for p in parts):
        raise ValueError(f"cannot parse {what} {text!r}: expected 1 to 3 numbers like '12 34 56.7'")
    if any(p[0] in "+-" for p in parts[1:]):
        raise ValueError(f"cannot parse {what} {text!r}: only the first part may carry a sign")
    values = [abs(float(p)) for p in parts]
    if any(v >= 60.0 + 1e-9 for v in values[1:]) or any(v >= 60.0 for v in values[1:-1]):
        # The site rounds seconds with %.2f, so "60.00" can appear; minutes cannot.
        raise ValueError(f"cannot parse {what} {text!r}: minutes/seconds must be below 60")
    return parts[0].startswith("-"), values


def _from_parts(values: list[float]) -> float:
    return sum(v / 60.0**i for i, v in enumerate(values))


def parse_ra(text: str) -> float:
    """Right ascension in hours, minutes, seconds ("19 54 7.92", "19:54:07.92",
    "19h54m07.92s") -> degrees in [0, 360)."""
    negative, values = _sexagesimal(text, "RA")
    hours = _from_parts(values)
    if negative or hours >= 24.0 + 1e-9:
        raise ValueError(f"cannot parse RA {text!r}: hours must be in [0, 24)")
    return (hours * 15.0) % 360.0


def parse_dec(text: str) -> float:
    """Declination ("60° 24' 48.46\"", "-00 12 34", "-0° 12' 3\"", "78&deg 23' 11.27\"")
    -> degrees. The sign is read from the text, so "-00 12 34" stays negative."""
    negative, values = _sexagesimal(text, "Dec")
    degrees = _from_parts(values)
    if degrees > 90.0 + 1e-9:
        raise ValueError(f"cannot parse Dec {text!r}: beyond the pole")
    return -degrees if negative else degrees


_FOV_UNITS = {
    "arcminutes": 1.0,
    "arcminute": 1.0,
    "arcmin": 1.0,
    "'": 1.0,
    "\u2032": 1.0,
    "arcseconds": 1 / 60,
    "arcsecond": 1 / 60,
    "arcsec": 1 / 60,
    '"': 1 / 60,
    "″": 1 / 60,
    "degrees": 60.0,
    "degree": 60.0,
    "deg": 60.0,
    "°": 60.0,
}


def parse_fov(text: str) -> tuple[float, float]:
    """Field of view "4.66 x 6.22 arcminutes" -> (4.66, 6.22) in arcminutes; arcseconds and
    degrees are converted; "x", the multiplication sign or "by" between the sides."""
    cleaned = _clean(text).lower()
    units = "|".join(re.escape(u) for u in sorted(_FOV_UNITS, key=len, reverse=True))
    match = re.fullmatch(rf"({_NUMBER})\s*(?:{units})?\s*{_TIMES}\s*({_NUMBER})\s*({units})?\.?", cleaned)
    if not match:
        raise ValueError(f"cannot parse field of view {text!r}: expected 'W x H arcminutes'")
    factor = _FOV_UNITS[match.group(3)] if match.group(3) else 1.0  # the site writes arcminutes
    x, y = float(match.group(1)) * factor, float(match.group(2)) * factor
    if not (x > 0 and y > 0):
        raise ValueError(f"cannot parse field of view {text!r}: sides must be positive")
    return x, y


def parse_orientation(text: str) -> float:
    """Orientation "North is 102.8° left of vertical" -> +102.8; "right" -> negative; "North is up" -> 0."""
    cleaned = _clean(text).lower()
    if re.fullmatch(r"north is (?:up|vertical)\.?", cleaned):
        return 0.0
    match = re.fullmatch(rf"north is ({_NUMBER})\s*(?:°|º|deg(?:rees?)?)?\s*(left|right) of vertical\.?", cleaned)
    if not match:
        raise ValueError(f"cannot parse orientation {text!r}: expected 'North is A° left|right of vertical'")
    angle = float(match.group(1))
    if not 0.0 <= angle <= 180.0:
        raise ValueError(f"cannot parse orientation {text!r}: angle must be within 0..180°")
    return angle if match.group(2) == "left" else -angle


def parse_release(text: str) -> datetime:
    """Release date "9 March 2013, 15:00" (the page) or "2013-03-09T15:00:00" (the JSON) -> an
    aware UTC datetime; naive times are taken as UTC, as the d2d feed's "Z" stamps show."""
    cleaned = _clean(text)
    for fmt in ("%d %B %Y, %H:%M", "%d %B %Y %H:%M", "%d %B %Y", "%d %b %Y, %H:%M", "%d %b %Y"):
        try:
            return datetime.strptime(cleaned, fmt).replace(tzinfo=UTC)
        except ValueError:
            pass
    try:
        when = datetime.fromisoformat(cleaned.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"cannot parse release date {text!r}: expected '9 March 2013, 15:00'") from exc
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def parse_size(text: str) -> tuple[int, int]:
    """Pixel size "5380 x 7173 px" -> (5380, 7173)."""
    match = re.fullmatch(rf"(\d+)\s*{_TIMES}\s*(\d+)\s*(?:px|pixels?)?", _clean(text).lower().replace(",", ""))
    if not match or 0 in (int(match.group(1)), int(match.group(2))):
        raise ValueError(f"cannot parse size {text!r}: expected 'W x H px'")
    return int(match.group(1)), int(match.group(2))


# -- AVM taxonomy ----------------------------------------------------------------------------

# AVM Subject.Category: a top-level letter, then a hierarchy shared by all of them
# (Djangoplicity's taxonomy). Only the first level is named here: deeper levels are
# taken from the page's text where it shows them, never guessed from the code.
TAXONOMY_TOP = {"A": "Solar System", "B": "Milky Way", "C": "Local Universe", "D": "Early Universe", "E": "Unspecified"}
TAXONOMY_LEVEL1 = {
    "1": "Planet",
    "2": "Interplanetary Body",
    "3": "Star",
    "4": "Nebula",
    "5": "Galaxy",
    "6": "Cosmology",
    "7": "Sky Phenomenon",
}


def taxonomy_text(code: str) -> str:
    """ "C.5.1.1" -> "Local Universe : Galaxy" (as deep as this module knows); "" if unknown."""
    parts = unbug(code).strip().upper().split(".") if isinstance(code, str) else []
    if not parts or parts[0] not in TAXONOMY_TOP:
        return ""
    names = [TAXONOMY_TOP[parts[0]]]
    if len(parts) > 1 and parts[1] in TAXONOMY_LEVEL1:
        names.append(TAXONOMY_LEVEL1[parts[1]])
    return " : ".join(names)


def _excluded(texts: Iterable[str], excluded_types: Iterable[str]) -> str | None:
    """The excluded type named earliest in the taxonomy (the broadest), matched as whole
    words so that "Planet" does not match "Planetary"."""
    best: tuple[int, int, str] | None = None
    for order, text in enumerate(t for t in texts if t):
        for kind in excluded_types:
            match = re.search(rf"(?<![\w]){re.escape(kind)}(?![\w])", text)
            if match and (best is None or (order, match.start()) < best[:2]):
                best = (order, match.start(), kind)
    return best[2] if best else None


# -- page data -----------------------------------------------------------------------------------


def _collapse(text: Any) -> str:
    return " ".join(str(text).split()) if text is not None else ""


def _key(label: str) -> str:
    return _collapse(label).rstrip(":").strip().lower()


class _Labels:
    """The detail page's label rows, looked up by label (and section where it matters:
    "Type:" is the AVM type under "About the Image" and the taxonomy under "About the Object")."""

    def __init__(self, rows: Iterable[Any] | None) -> None:
        self.values: dict[str, str] = {}
        self.taxonomy: list[str] = []
        for row in rows or []:
            if not isinstance(row, (list, tuple)) or len(row) < 3:
                continue
            section, label, value = _collapse(row[0]), _key(row[1]), _collapse(row[2])
            if label == "type" and ("object" in section.lower() or " : " in value):
                self.taxonomy.append(value)
            else:
                self.values.setdefault(label, value)

    def get(self, *labels: str) -> str:
        for label in labels:
            value = self.values.get(label, "")
            if value:
                return value
        return ""


def _parsed(labels: _Labels, warnings: list[str], parser, *names: str):
    """parser(label value), None when the label is absent; a bad label is a warning, not a crash."""
    text = labels.get(*names)
    if not text:
        return None
    try:
        return parser(text)
    except ValueError as exc:
        warnings.append(f"label {names[0]!r}: {exc}")
        return None


def _plain(value: Any) -> str:
    """A JSON text field: bug strings undone, HTML tags dropped, entities decoded."""
    value = unbug(value)
    if not isinstance(value, str):
        return ""
    return _collapse(html.unescape(re.sub(r"<[^>]+>", " ", value)))


def _texts(value: Any) -> list[str]:
    """A JSON list of strings (a lone string counts as a list of one), cleaned, empties dropped."""
    value = unbug(value)
    items = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    return [t for t in map(_plain, items) if t]


# -- image URLs --------------------------------------------------------------------------------

_DOWNLOAD_LABELS = {
    "fullsize original": "original",
    "large jpeg": "large",
    "publication jpeg": "publicationjpg",
    "screensize jpeg": "screen",
}


def _format_of(url: str, label: str = "") -> str | None:
    """The size name of a download: the CDN folder (``…/images/{fmt}/{file}``), else the label."""
    parts = PurePosixPath(urlsplit(url).path).parts
    if len(parts) >= 3 and parts[-3] == "images" and re.fullmatch(r"[a-z0-9]+", parts[-2]):
        return parts[-2]
    return _DOWNLOAD_LABELS.get(_collapse(label).lower())


def _image_urls(page: Mapping[str, Any] | None, doc: Mapping[str, Any] | None) -> dict[str, str]:
    urls: dict[str, str] = {}
    for item in (page or {}).get("downloads") or []:
        if isinstance(item, (list, tuple)) and len(item) >= 2 and item[1]:
            fmt = _format_of(str(item[1]), str(item[0]))
            if fmt:
                urls.setdefault(fmt, str(item[1]))
    doc = doc or {}
    for url in (doc.get("formats_url") or {}).values():
        fmt = _format_of(str(unbug(url)))
        if fmt:
            urls.setdefault(fmt, str(unbug(url)))
    for resource in doc.get("Resources") or []:
        url = unbug((resource or {}).get("URL"))
        fmt = _format_of(str(url)) if url else None
        if fmt:
            urls.setdefault(fmt, str(url))
    return dict(sorted(urls.items()))


def _file_name(urls: Mapping[str, str], image_id: str) -> str:
    """The file name on the CDN (not always the id): from the original's URL, else any."""
    for fmt in ("original", "large", "publicationjpg", "screen", *sorted(urls)):
        if fmt in urls:
            return PurePosixPath(urlsplit(urls[fmt]).path).stem
    return image_id


# -- the result -------------------------------------------------------------------------------


@dataclass
class Extracted:
    meta: dict[str, Any] | None  # meta.json content when usable
    skip_reason: str | None  # why not usable
    cross_check: list[dict[str, Any]]  # label vs AVM disagreements beyond the label rounding
    warnings: list[str] = field(default_factory=list)  # labels or AVM that could not be read


@dataclass
class _Spatial:
    """The geometry of one image, with where each part came from."""

    center: tuple[float, float] | None = None
    fov: tuple[float, float] | None = None
    north_angle: float | None = None
    pixel_scale: float | None = None
    wcs: dict[str, Any] | None = None
    sources: dict[str, str] = field(default_factory=dict)


def _angle_difference(a: float, b: float) -> float:
    return (a - b + 180.0) % 360.0 - 180.0


def _cross_check(avm: SpatialAvm, labels: dict[str, Any]) -> list[dict[str, Any]]:
    """Label values that disagree with the AVM beyond the site's rounding."""
    checks: list[tuple[str, float, float, float]] = []  # field, avm, label, difference
    if labels.get("ra") is not None:
        d = _angle_difference(labels["ra"], avm.ra) * 3600.0 * math.cos(math.radians(avm.dec))
        checks.append(("ra", avm.ra, labels["ra"], d))
    if labels.get("dec") is not None:
        checks.append(("dec", avm.dec, labels["dec"], (labels["dec"] - avm.dec) * 3600.0))
    if avm.has_wcs:
        fov = avm.fov_arcmin()
        if labels.get("fov") is not None:
            checks.append(("fov_x", fov[0], labels["fov"][0], labels["fov"][0] - fov[0]))
            checks.append(("fov_y", fov[1], labels["fov"][1], labels["fov"][1] - fov[1]))
        if labels.get("north_angle") is not None:
            rotation = avm.rotation or 0.0
            checks.append(
                ("north_angle", rotation, labels["north_angle"], _angle_difference(labels["north_angle"], rotation))
            )
    out = []
    for name, avm_value, label_value, difference in checks:
        if abs(difference) <= TOLERANCE[name]:
            continue
        entry = {
            "field": name,
            "avm": avm_value,
            "label": label_value,
            "difference": difference,
            "tolerance": TOLERANCE[name],
            "unit": UNITS[name],
        }
        if name == "dec" and -1.0 < avm.dec < 0.0 and abs(label_value + avm.dec) * 3600.0 <= TOLERANCE["dec"]:
            entry["note"] = "the site drops the minus sign of declinations between -1 and 0 degrees"
        out.append(entry)
    return out


def _spatial(
    avm: SpatialAvm | None, labels: dict[str, Any], size: tuple[int, int] | None, warnings: list[str]
) -> _Spatial:
    """Centre, field, orientation and WCS at ``size``: the AVM where it has them, the labels
    otherwise (reference pixel assumed at the centre, as the site's labels do)."""
    out = _Spatial()
    if avm is not None and avm.has_wcs:
        try:
            ref = avm.reference_dimension
            assert ref is not None
            header = avm.header(*(size or (round(ref[0]), round(ref[1]))))
        except ValueError as exc:
            warnings.append(f"AVM ignored: {exc}")
        else:
            # The centre of the pixel grid, not CRVAL: the reference pixel may be anywhere.
            out.center = pixel_to_world(header, (header["NAXIS1"] + 1) / 2, (header["NAXIS2"] + 1) / 2)
            out.fov = avm.fov_arcmin()
            out.north_angle = avm.rotation or 0.0
            out.pixel_scale = abs(header["CDELT1"]) * 3600.0
            out.wcs = header
            out.sources.update(center="avm", fov="avm", north_angle="avm", wcs="avm", pixel_scale="avm")
            return out
    if avm is not None:
        out.center, out.sources["center"] = (avm.ra, avm.dec), "avm"
    elif labels.get("ra") is not None and labels.get("dec") is not None:
        out.center, out.sources["center"] = (labels["ra"], labels["dec"]), "labels"
    if labels.get("fov") is not None:
        out.fov, out.sources["fov"] = labels["fov"], "labels"
    if labels.get("north_angle") is not None:
        out.north_angle, out.sources["north_angle"] = labels["north_angle"], "labels"
    if out.center and out.fov and out.north_angle is None:
        warnings.append("no orientation: the labels give no WCS")
    elif out.center and out.fov and size:
        out.wcs = _label_header(out.center, out.fov, out.north_angle, size)
        out.pixel_scale = abs(out.wcs["CDELT1"]) * 3600.0
        out.sources.update(wcs="labels", pixel_scale="labels")
    return out


def _label_header(
    center: tuple[float, float], fov: tuple[float, float], north_angle: float, size: tuple[int, int]
) -> dict[str, Any]:
    """A TAN header from the label summary: centre at the middle of the grid, scale from the
    field of view per axis, CROTA2 = north angle."""
    width, height = size
    cdelt = (-fov[0] / 60.0 / width, fov[1] / 60.0 / height)
    return fits_header(center[0], center[1], ((width + 1) / 2, (height + 1) / 2), cdelt, north_angle, size)


def extract(
    source: str,
    image_id: str,
    page_url: str,
    json_doc: dict[str, Any] | None,
    page: dict[str, Any] | None,
    listing: dict[str, Any] | None = None,
    *,
    excluded_types: Iterable[str] = EXCLUDED_TYPES_DEFAULT,
    min_fov_arcmin: float = MIN_FOV_ARCMIN_DEFAULT,
) -> Extracted:
    """meta.json for one archive image, or why it is not usable. ``json_doc`` or ``page``
    may be None (a failed fetch): what there is is used."""
    if json_doc is None and page is None:
        return Extracted(None, "no metadata", [])
    doc: Mapping[str, Any] = json_doc or {}
    labels = _Labels((page or {}).get("rows"))
    warnings: list[str] = []
    sources: dict[str, str] = {}

    def pick(name: str, *candidates: tuple[str, Any]) -> Any:
        for origin, value in candidates:
            if value not in (None, "", [], ()):
                sources[name] = origin
                return value
        return None

    image_type = pick("type", ("json", _plain(doc.get("Type"))), ("page", labels.get("type"))) or ""
    if image_type and image_type.lower() != "observation":
        return Extracted(None, f"not an observation: {image_type}", [], warnings)

    codes = _texts(doc.get("Subject.Category"))
    category = pick(
        "category",
        ("page", " ".join(labels.taxonomy)),
        ("taxonomy-code", " ; ".join(t for t in map(taxonomy_text, codes) if t)),
    )
    web_category = labels.get("category")
    excluded = _excluded([category or "", *map(taxonomy_text, codes), web_category], excluded_types)
    if excluded:
        return Extracted(None, f"excluded type: {excluded}", [], warnings)

    label_values = {
        "ra": _parsed(labels, warnings, parse_ra, "position (ra)"),
        "dec": _parsed(labels, warnings, parse_dec, "position (dec)"),
        "fov": _parsed(labels, warnings, parse_fov, "field of view"),
        "north_angle": _parsed(labels, warnings, parse_orientation, "orientation"),
    }
    try:
        avm = avm_from_json(doc)
    except ValueError as exc:
        warnings.append(f"JSON AVM unreadable: {exc}")
        avm = None

    size = pick(
        "pixel_size",
        ("page", _parsed(labels, warnings, parse_size, "size")),
        ("json", _original_dimensions(doc)),
        ("listing", _listing_size(listing)),
    )
    spatial = _spatial(avm, label_values, size, warnings)
    cross_check = _cross_check(avm, label_values) if avm is not None else []

    if spatial.center is None:
        return Extracted(None, "no coordinates", cross_check, warnings)
    if spatial.sources.get("center") == "labels" and 0.0 <= spatial.center[1] < 1.0:
        warnings.append("Dec from the label only: between 0 and 1 degrees its minus sign may have been dropped")
    if spatial.fov is None:
        return Extracted(None, "no field of view", cross_check, warnings)
    # The field's extent (its longer side) decides whether a survey cutout can show it.
    if max(spatial.fov) < min_fov_arcmin:
        reason = f"field of view {max(spatial.fov):.3g} arcmin < {min_fov_arcmin:g}"
        return Extracted(None, reason, cross_check, warnings)

    title = pick("title", ("json", _plain(doc.get("Title"))), ("page", _collapse((page or {}).get("title"))))
    if not title and listing:
        title = pick("title", ("listing", _collapse(html.unescape(str(listing.get("title") or "")))))
    credit = pick("credit", ("json", _plain(doc.get("Credit"))), ("page", _collapse((page or {}).get("credit"))))
    release = pick(
        "release_date",
        ("json", _release_or_none(doc.get("Date"), warnings)),
        ("page", _parsed(labels, warnings, parse_release, "release date")),
    )
    names = pick(
        "names",
        ("json", _texts(doc.get("Subject.Name"))),
        ("page", [n.strip() for n in labels.get("name").split(",") if n.strip()]),
    )
    image_urls = _image_urls(page, doc)
    sources.update(spatial.sources)
    page_url = str(page_url)
    meta: dict[str, Any] = {
        "schema": SCHEMA,
        "id": image_id,
        "source": source,
        "file_name": _file_name(image_urls, image_id),
        "type": image_type or "Observation",
        "title": title or "",
        "page_url": page_url,
        "json_url": page_url.rstrip("/") + "/api/json/",
        "release_date": release.isoformat() if release else None,
        "pixel_size": {"width": size[0], "height": size[1]} if size else None,
        "center": {"ra_deg": spatial.center[0], "dec_deg": spatial.center[1]},
        "fov_arcmin": {"x": spatial.fov[0], "y": spatial.fov[1]},
        "north_angle_deg": spatial.north_angle,
        "pixel_scale_arcsec": spatial.pixel_scale,
        "wcs": spatial.wcs,
        "category": category or "",
        "taxonomy_codes": codes,
        "web_category": web_category,
        "names": names or [],
        "distance": labels.get("distance"),
        "constellation": labels.get("constellation"),
        "credit": credit or "",
        "licence": LICENCE,
        "licence_url": LICENCE_URL,
        "image_urls": image_urls,
        "value_sources": dict(sorted(sources.items())),
        "cross_check": cross_check,
        "warnings": warnings,
    }
    meta["content_hash"] = content_hash(meta)
    return Extracted(meta, None, cross_check, warnings)


def _release_or_none(value: Any, warnings: list[str]) -> datetime | None:
    text = _plain(value)
    if not text:
        return None
    try:
        return parse_release(text)
    except ValueError as exc:
        warnings.append(f"JSON Date: {exc}")
        return None


def _original_dimensions(doc: Mapping[str, Any]) -> tuple[int, int] | None:
    """The original's pixel size from the JSON's Resources (Dimensions, sometimes floats)."""
    for resource in doc.get("Resources") or []:
        if _collapse((resource or {}).get("ResourceType")).lower() == "original":
            dims = unbug(resource.get("Dimensions"))
            try:
                width, height = (round(float(v)) for v in dims)
            except (TypeError, ValueError):
                return None
            return (width, height) if width > 0 and height > 0 else None
    return None


def _listing_size(listing: Mapping[str, Any] | None) -> tuple[int, int] | None:
    try:
        width, height = int(listing["width"]), int(listing["height"])  # type: ignore[index]
    except (TypeError, KeyError, ValueError):
        return None
    return (width, height) if width > 0 and height > 0 else None


# -- WCS of a downloaded file ----------------------------------------------------------------------


def image_wcs(meta: Mapping[str, Any], width: int, height: int, embedded: SpatialAvm | None) -> tuple[dict | None, str]:
    """The WCS header of a downloaded file of ``width`` x ``height`` px, with its source:
    the JSON AVM rescaled ("json-avm"); else the file's embedded AVM, rescaled from its own
    ReferenceDimension, which may be the original's rather than the file's ("embedded-avm");
    else the labels' centre, field and orientation ("labels"); (None, "") when nothing fits."""
    sources = meta.get("value_sources") or {}
    wcs = meta.get("wcs")
    if wcs and sources.get("wcs") == "avm":
        try:
            return rescale_header(wcs, width, height), "json-avm"
        except ValueError as exc:
            log.warning("%s: JSON AVM does not fit the %dx%d file: %s", meta.get("id"), width, height, exc)
    if embedded is not None and embedded.has_wcs:
        try:
            return embedded.header(width, height), "embedded-avm"
        except ValueError as exc:
            log.warning("%s: embedded AVM does not fit the %dx%d file: %s", meta.get("id"), width, height, exc)
    if wcs and sources.get("wcs") == "labels":
        try:
            return rescale_header(wcs, width, height), "labels"
        except ValueError as exc:
            log.warning("%s: label WCS does not fit the %dx%d file: %s", meta.get("id"), width, height, exc)
    center, fov = meta.get("center"), meta.get("fov_arcmin")
    angle = meta.get("north_angle_deg")
    if center and fov and angle is not None and not wcs:  # no pixel size was known: the labels at the file's size
        header = _label_header((center["ra_deg"], center["dec_deg"]), (fov["x"], fov["y"]), angle, (width, height))
        return header, "labels"
    return None, ""


# -- change detection ------------------------------------------------------------------------------


def _without_host(value: Any) -> Any:
    """A URL's path only: the same item served from another host is the same content."""
    if isinstance(value, str) and "://" in value:
        return urlsplit(value).path
    if isinstance(value, dict):
        return {k: _without_host(v) for k, v in value.items()}
    return value


def content_hash(meta: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of the metadata (not what the crawler adds: crawl
    time, validators, downloaded images, withdrawal), URLs without their host."""
    content = {k: v for k, v in meta.items() if k not in NOT_CONTENT and not k.startswith("_")}
    for key in ("page_url", "json_url", "image_urls"):
        if key in content:
            content[key] = _without_host(content[key])
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()
