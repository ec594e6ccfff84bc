"""What the archive replica says about its images, in the real sites' formats:
listing pages (ids in an inline script), detail pages (the label/value tables in
their three markup variants), the per-image JSON with flat AVM keys, the d2d feed
and robots.txt. Everything here is a pure function of the observations and the
base URL, so the same request always gives the same bytes.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from services.universe.replicas.archive_avm import (
    FieldWcs,
    dec_label_html,
    fov_label,
    orientation_label_html,
    ra_label,
    size_label,
)
from services.universe.replicas.archive_catalogue import PROFILES, Observation
from services.universe.replicas.archive_images import ServedSizes

RIGHTS = "Creative Commons Attribution 4.0 International License"
ROBOTS_DISALLOW = ("/admin/", "/media/archives/images/original/", "/_replica/")
SITE_NAMES = {"esahubble": "ESA/Hubble", "esawebb": "ESA/Webb"}
LABEL_SECTIONS = ("About the Image", "About the Object", "Coordinates")


def robots_txt() -> bytes:
    lines = ["User-agent: *", *(f"Disallow: {path}" for path in ROBOTS_DISALLOW), ""]
    return "\n".join(lines).encode()


# -- labels ---------------------------------------------------------------------


def page_variant(obs: Observation) -> str:
    """Older Hubble pages use td.title, newer ones th.title, Webb th with newlines."""
    if obs.site == "esawebb":
        return "webb"
    return "td" if obs.release.year < 2015 else "th"


def release_label(when: datetime) -> str:
    return f"{when.day} {when:%B %Y, %H:%M}"


def label_rows(obs: Observation) -> list[tuple[str, str, str]]:
    """(section, label, value as HTML) in page order."""
    rows = [
        ("About the Image", "Id:", obs.id),
        ("About the Image", "Type:", obs.type),
        ("About the Image", "Release date:", release_label(obs.release)),
        ("About the Image", "Size:", size_label(obs.width, obs.height)),
        ("About the Object", "Name:", html.escape(", ".join(obs.names))),
    ]
    if obs.site == "esawebb":
        link = f'<a href="/images/archive/category/{obs.category.lower().replace(" ", "")}/">{obs.category}</a>'
        rows.append(("About the Object", "Category:", link))
    else:
        rows.append(("About the Object", "Type:", html.escape(obs.taxonomy[1])))
    if obs.distance:
        rows.append(("About the Object", "Distance:", obs.distance))
    if obs.constellation:
        rows.append(("About the Object", "Constellation:", obs.constellation))
    labels = obs.label_wcs
    if labels is not None:
        rows.append(("Coordinates", "Position (RA):", ra_label(labels.ra)))
        rows.append(("Coordinates", "Position (Dec):", dec_label_html(labels.dec)))
        if obs.avm_quality != "Position":
            rows.append(
                ("Coordinates", "Field of view:", fov_label(labels.scale, labels.scale, labels.width, labels.height))
            )
            rows.append(("Coordinates", "Orientation:", orientation_label_html(labels.rotation)))
    return rows


def html_to_text(fragment: str) -> str:
    """What a parser reads from a cell: tags dropped, entities decoded, spaces collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def _row(variant: str, label: str, value: str, malformed: bool) -> str:
    if malformed:  # no closing tags, unquoted attribute: browsers cope, strict parsers do not
        return f"<tr><td class=title>{label}<td>{value}\n"
    if variant == "td":
        return f'<tr><td class="title">{label}</td><td>{value}</td></tr>\n'
    if variant == "th":
        return f'<tr><th class="title" scope="row">{label}</th><td>{value}</td></tr>\n'
    return f'<tr>\n<th scope="row">\n    {label}\n</th>\n<td>\n    {value}\n</td>\n</tr>\n'


# -- shared chrome -----------------------------------------------------------------


def _page(site: str, title: str, content: str) -> bytes:
    name = SITE_NAMES[site]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)} | {name}</title>\n</head>\n<body>\n"
        f'<nav class="navbar"><a href="/">{name}</a> <a href="/images/">Images</a></nav>\n'
        f'<div id="content">\n{content}</div>\n'
        f'<footer><a href="/copyright/">Copyright</a> {RIGHTS}</footer>\n</body>\n</html>\n'
    ).encode()


def not_found_page(site: str) -> bytes:
    return _page(site, "Page not found", "<h1>Page not found</h1>\n<p>The page you requested does not exist.</p>\n")


def _filesize_label(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} KB"


def estimated_filesize(obs: Observation, fmt: str, sizes: ServedSizes) -> int:
    """Sizes shown beside downloads and in FileSize: a deterministic estimate (the
    files render lazily); the served Content-Length is the authority."""
    width, height = sizes.size(obs, fmt)
    return width * height * 3 + 8192 if fmt == "original" else int(width * height * 0.3) + 4096


def image_url(base: str, obs: Observation, fmt: str) -> str:
    if fmt == "original":
        return f"{base}/media/archives/images/original/{obs.file_name}.tif"
    return f"{base}/archives/images/{fmt}/{obs.file_name}.jpg"


DOWNLOADS = (
    ("original", "Fullsize Original"),
    ("large", "Large JPEG"),
    ("publicationjpg", "Publication JPEG"),
    ("screen", "Screensize JPEG"),
)


# -- detail page ----------------------------------------------------------------------


def detail_page(obs: Observation, base: str, sizes: ServedSizes, malformed: bool = False) -> bytes:
    variant = page_variant(obs)
    sections: dict[str, list[str]] = {}
    for section, label, value in label_rows(obs):
        sections.setdefault(section, []).append(_row(variant, label, value, malformed))
    boxes = "".join(
        f'<div class="object-info">\n<h3>{section}</h3>\n<table class="table">\n{"".join(rows)}</table>\n</div>\n'
        for section, rows in sections.items()
    )
    profile = PROFILES[obs.site]
    boxes += (
        '<div class="object-info">\n<h3>Colours &amp; filters</h3>\n<table class="table">\n'
        "<tr><th>Band</th><th>Wavelength</th><th>Telescope</th></tr>\n"
        f"<tr><td>{'Optical' if obs.style == 'hubble' else 'Infrared'}</td>"
        f"<td>{'606 nm' if obs.style == 'hubble' else '2 μm'}</td>"
        f"<td>{profile.facility} {profile.instrument[0]}</td></tr>\n</table>\n</div>\n"
    )
    downloads = "".join(
        f'<li><a href="{image_url(base, obs, fmt)}">{label}</a> '
        f'<span class="filesize">{_filesize_label(estimated_filesize(obs, fmt, sizes))}</span></li>\n'
        for fmt, label in DOWNLOADS
    )
    title = html.escape(obs.title)
    if malformed:
        title = obs.title.replace("'", "&#x27;") + " & more"  # a raw ampersand, as hand-edited pages have
    credit = html.escape(obs.credit)
    credit_block = (
        f'<div class="credit-label"><strong>Credit:</strong></div>\n<div class="credit"><p>{credit}</p></div>\n'
    )
    if malformed:
        credit_block = f"<div class=credit-label><strong>Credit:</strong>\n<div class=credit><p>{credit}\n</span>"
    content = (
        f'<div class="row">\n<div class="col-md-9 left-column">\n<h1>{title}</h1>\n'
        f'<div class="image"><img src="{image_url(base, obs, "screen")}" alt="{html.escape(obs.title)}"></div>\n'
        f'<div class="description"><p>{html.escape(obs.description)}</p></div>\n{credit_block}</div>\n'
        f'<div class="col-md-3 right-column">\n<div class="archive_download">\n<h3>Downloads</h3>\n<ul>\n{downloads}'
        f"</ul>\n</div>\n{boxes}</div>\n</div>\n"
    )
    if malformed:
        content += "</div></div>\n<p>Unclosed paragraph\n"
    return _page(obs.site, obs.title, content)


# -- listing ---------------------------------------------------------------------------


def listing_page(
    site: str, entries: Sequence[Observation], page: int, pages: int, total: int, first: int, base: str, link
) -> bytes:
    """``link(n)`` is the relative URL of page n (same query)."""
    items = "".join(
        "    {\n"
        f"        id: '{o.id}',\n"
        f"        title: '{html.escape(o.title, quote=True)}',\n"
        f"        width: {o.width},\n"
        f"        height: {o.height},\n"
        f"        src: '{image_url(base, o, 'thumb300y')}',\n"
        f"        url: '/images/{o.id}/',\n"
        f"        potw: '{o.potw}',\n"
        "    },\n"
        for o in entries
    )
    pagination = "".join(
        f'<li class="page-item{" active" if n == page else ""}">'
        f'<a class="page-link" href="{html.escape(link(n))}">{n}</a></li>\n'
        for n in range(1, pages + 1)
    )
    last = first + len(entries) - 1 if entries else 0
    content = (
        '<div class="row">\n<div class="col-md-9">\n<h1>Images</h1>\n'
        f'<script>\nvar images = [\n{items}];\n</script>\n<div id="images-grid"></div>\n</div>\n'
        f'<div class="col-md-3">Showing {first if entries else 0} to {last} of {total}</div>\n</div>\n'
        f'<ul class="pagination">\n{pagination}</ul>\n'
    )
    return _page(site, "Images", content)


# -- JSON -----------------------------------------------------------------------------


def _num(x: float) -> str:
    return repr(float(x))


def _bytes_bug(value: Any) -> Any:
    """The server bug that returns some strings as the repr of bytes."""
    if isinstance(value, str):
        return f"b'{value}'"
    if isinstance(value, list):
        return [_bytes_bug(v) for v in value]
    return value


def avm_spatial(obs: Observation) -> dict[str, Any]:
    """The flat Spatial.* keys of the per-image JSON (lists of strings, null if empty)."""
    wcs: FieldWcs | None = obs.wcs if obs.avm_quality else None
    keys = (
        "CoordinateFrame",
        "Equinox",
        "ReferenceValue",
        "ReferenceDimension",
        "ReferencePixel",
        "Scale",
        "Rotation",
        "CoordsystemProjection",
        "Quality",
        "Notes",
    )
    spatial: dict[str, Any] = {f"Spatial.{k}": None for k in keys}
    if wcs is not None:
        spatial["Spatial.CoordinateFrame"] = "ICRS"
        spatial["Spatial.Equinox"] = "J2000"
        spatial["Spatial.ReferenceValue"] = [_num(wcs.ra), _num(wcs.dec)]
        spatial["Spatial.Quality"] = obs.avm_quality
        if obs.avm_quality == "Full":
            spatial["Spatial.ReferenceDimension"] = [str(wcs.width), str(wcs.height)]
            spatial["Spatial.ReferencePixel"] = [_num(wcs.crpix[0]), _num(wcs.crpix[1])]
            second = "" if "scale_y_empty" in obs.edge_cases else _num(wcs.scale)
            spatial["Spatial.Scale"] = [_num(-wcs.scale), second]
            spatial["Spatial.Rotation"] = wcs.rotation
            spatial["Spatial.CoordsystemProjection"] = "TAN"
    if "json_bytes_strings" in obs.edge_cases:
        spatial = {k: v if k == "Spatial.Rotation" else _bytes_bug(v) for k, v in spatial.items()}
    return spatial


def resources(obs: Observation, base: str, sizes: ServedSizes, d2d: bool) -> list[dict[str, Any]]:
    out = []
    for name, fmt in (("Original", "original"), ("Large", "large"), ("Small", "screen"), ("Thumbnail", "thumb300y")):
        width, height = sizes.size(obs, fmt)
        entry: dict[str, Any] = {
            "ResourceType": name,
            "MediaType": "Image",
            "URL": image_url(base, obs, fmt),
            "FileSize": estimated_filesize(obs, fmt, sizes),
            # Derivatives come as floats, the original as ints, as on the real feed.
            "Dimensions": [width, height] if fmt == "original" else [float(width), float(height)],
            "ProjectionType": "Observation" if obs.type == "Observation" else "Tan",
        }
        if not d2d:
            entry.pop("ProjectionType")
        out.append(entry)
    return out


def image_json(obs: Observation, base: str, sizes: ServedSizes) -> bytes:
    profile = PROFILES[obs.site]
    doc: dict[str, Any] = {
        "Creator": SITE_NAMES[obs.site],
        "CreatorURL": f"{base}/",
        "Contact.Name": [],
        "Rights": RIGHTS,
        "Title": obs.title,
        "Headline": None,
        "Description": obs.description,
        "Subject.Category": [obs.taxonomy[0]],
        "Subject.Name": list(obs.names),
        "Distance": [
            None if obs.distance_ly is None else f"{obs.distance_ly:.0f}",
            None if obs.distance_z is None else str(obs.distance_z),
        ],
        "Distance.Notes": None,
        "ReferenceURL": f"{base}/images/{obs.id}/",
        "Credit": obs.credit,
        "Date": obs.release.strftime("%Y-%m-%dT%H:%M:%S"),
        "ID": obs.id,
        "Type": obs.type,
        "Facility": [profile.facility] if obs.type == "Observation" else [],
        "Instrument": [profile.instrument[0]] if obs.type == "Observation" else [],
        **avm_spatial(obs),
        "Publisher": SITE_NAMES[obs.site],
        "PublisherID": "vamp://" + obs.site,
        "ResourceID": obs.file_name,
        "ResourceURL": image_url(base, obs, "original"),
        "MetadataDate": obs.modified.strftime("%Y-%m-%dT%H:%M:%S"),
        "MetadataVersion": "1.1",
        "formats_url": {fmt: image_url(base, obs, fmt) for fmt in ("original", "large", "publicationjpg", "screen")},
        "Resources": resources(obs, base, sizes, d2d=False),
    }
    return (json.dumps(doc, ensure_ascii=False, indent=1) + "\n").encode()


def _prune(value: Any) -> Any:
    """The feed omits keys whose value is null or empty (recursively)."""
    if isinstance(value, dict):
        pruned = {k: _prune(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v not in (None, "", [], {})}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


def d2d_entry(obs: Observation, base: str, sizes: ServedSizes) -> dict[str, Any]:
    profile = PROFILES[obs.site]
    observation = None
    if obs.type == "Observation":
        wcs = obs.wcs if obs.avm_quality else None
        full = wcs is not None and obs.avm_quality == "Full"
        spatial = {
            "CoordinateFrame": "ICRS" if wcs else None,
            "ReferenceValue": [wcs.ra, wcs.dec] if wcs else None,
            "ReferenceDimension": [float(wcs.width), float(wcs.height)] if full and wcs else None,
            "ReferencePixel": [wcs.crpix[0], wcs.crpix[1]] if full and wcs else None,
            "Scale": [-wcs.scale, None if "scale_y_empty" in obs.edge_cases else wcs.scale] if full and wcs else None,
            "Rotation": wcs.rotation if full and wcs else None,
            "CoordsystemProjection": "TAN" if full else None,
            "Equinox": "J2000" if wcs else None,
        }
        observation = {
            "Facility": [profile.facility],
            "Instrument": [profile.instrument[0]],
            "Distance": [obs.distance_ly, obs.distance_z],
            "Spatial": spatial,
        }
    entry = {
        "Creator": SITE_NAMES[obs.site],
        "URL": f"{base}/",
        "ID": obs.id,
        "Title": obs.title,
        "Description": obs.description,
        "Credit": obs.credit,
        "PublicationDate": obs.release.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "Subject": {"Category": [obs.taxonomy[0]], "Name": list(obs.names)},
        "ReferenceURL": f"{base}/images/{obs.id}/",
        "Rights": RIGHTS,
        "Priority": obs.priority,
        "Assets": [
            {"MediaType": "Image", "Resources": resources(obs, base, sizes, d2d=True), "ObservationData": observation}
        ],
    }
    return _prune(entry)


def d2d_page(entries: list[dict[str, Any]], count: int, next_url: str | None, previous_url: str | None) -> bytes:
    doc = _prune({"Count": count, "Next": next_url, "Previous": previous_url, "Collections": entries})
    if "Collections" not in doc:
        doc["Collections"] = []
    return json.dumps(doc, ensure_ascii=False).encode()
