"""services.crawler.extract against the archive replica's ground truth: for every image of
both sites, the meta.json built from the per-image JSON and the detail page's label rows
(the truth's ``labels`` are exactly what the browser hands over) must give the true
centre, field, orientation and WCS at every served size, skip what the generator cannot
use with a reason, and cross-check the labels. A few served JPEGs test the embedded AVM.
No browser: pure functions fed over plain HTTP."""

from __future__ import annotations

import copy
import json
import math
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.wcs import WCS

from services.crawler.extract import (
    LICENCE_URL,
    SpatialAvm,
    avm_from_image,
    avm_from_json,
    content_hash,
    extract,
    image_wcs,
    parse_dec,
    parse_fov,
    parse_orientation,
    parse_ra,
    parse_release,
    parse_size,
    taxonomy_text,
)
from services.universe.replicas.archive import ArchiveReplica
from services.universe.sky import Sky

SITES = ("esahubble", "esawebb")
CACHE = Path(__file__).resolve().parents[1] / ".cache" / "universe"  # warm: a replica starts in ~1 s
SIZES = ("screen", "large", "publicationjpg", "thumb300y", "original")
DOWNLOADS = (
    ("original", "Fullsize Original"),
    ("large", "Large JPEG"),
    ("publicationjpg", "Publication JPEG"),
    ("screen", "Screensize JPEG"),
)
SKIPPED = {
    "artwork": "not an observation: Artwork",
    "solar_system": "excluded type: Solar System",
    "deep_field": "excluded type: Early Universe",
    "missing_coordinates": "no coordinates",
    "position_only": "no field of view",
}
REQUIRED_EDGES = {
    *SKIPPED,
    "dec_between_minus1_and_0",
    "no_avm_spatial",
    "json_bytes_strings",
    "scale_y_empty",
    "avm_reference_dimension_mismatch",
    "labels_disagree_with_avm",
    "crpix_off_centre",
    "right_of_vertical",
    "file_name_differs",
    "non_ascii_credit",
    "huge_image",
}
AVM_PX = 0.05  # WCS from the AVM vs the true WCS of a served file, pixels


# -- fixtures ------------------------------------------------------------------------------------


@dataclass
class Site:
    name: str
    replica: ArchiveReplica
    truth: dict[str, Any]
    docs: dict[str, dict[str, Any]]  # id -> parsed /images/{id}/api/json/

    def observations(self) -> dict[str, dict[str, Any]]:
        return self.truth["observations"]

    def one(self, edge: str) -> str:
        return self.truth["edge_cases"][edge][0]

    def page_url(self, ident: str) -> str:
        return f"{self.replica.url}/images/{ident}/"

    def extract(self, ident: str, **kwargs: Any):
        kwargs.setdefault("json_doc", self.docs[ident])
        kwargs.setdefault("page", page_of(self.observations()[ident]))
        return extract(self.name, ident, self.page_url(ident), **kwargs)


@pytest.fixture(scope="module")
def sites() -> Iterator[dict[str, Site]]:
    sky = Sky()
    started: dict[str, ArchiveReplica] = {}
    try:
        for name in SITES:
            started[name] = ArchiveReplica(name, sky, CACHE).start()
        out = {}
        for name, replica in started.items():
            truth = replica.truth()
            docs = {ident: fetch_json(f"{replica.url}/images/{ident}/api/json/") for ident in truth["observations"]}
            out[name] = Site(name, replica, truth, docs)
        yield out
    finally:
        for replica in started.values():
            replica.stop()


@pytest.fixture(params=SITES)
def site(request: pytest.FixtureRequest, sites: dict[str, Site]) -> Site:
    return sites[request.param]


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=120) as response:
        return response.read()


def fetch_json(url: str) -> dict[str, Any]:
    return json.loads(fetch(url))


def page_of(entry: dict[str, Any]) -> dict[str, Any]:
    """The PageData the browser would hand over (the truth's labels are its rows)."""
    return {
        "title": entry["title"],
        "credit": entry["credit"],
        "rows": entry["labels"],
        "downloads": [[label, entry["served"][fmt]["url"]] for fmt, label in DOWNLOADS],
    }


# -- WCS helpers ----------------------------------------------------------------------------------


def astropy_wcs(header: dict[str, Any]) -> WCS:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return WCS(dict(header))


def max_pixel_difference(header: dict[str, Any], true: dict[str, Any]) -> float:
    """How far apart two WCSs put the same sky positions (corners, centre, two inner
    points of the true grid), in pixels."""
    assert (header["NAXIS1"], header["NAXIS2"]) == (true["NAXIS1"], true["NAXIS2"])
    w, h = true["NAXIS1"], true["NAXIS2"]
    xs = np.array([0.0, w - 1, 0.0, w - 1, (w - 1) / 2, 0.3 * w, 0.8 * w])
    ys = np.array([0.0, 0.0, h - 1, h - 1, (h - 1) / 2, 0.7 * h, 0.1 * h])
    ra, dec = astropy_wcs(true).all_pix2world(xs, ys, 0)
    x2, y2 = astropy_wcs(header).all_world2pix(ra, dec, 0)
    return float(np.max(np.hypot(x2 - xs, y2 - ys)))


def true_centre(header: dict[str, Any]) -> tuple[float, float]:
    ra, dec = astropy_wcs(header).all_pix2world([[(header["NAXIS1"] + 1) / 2, (header["NAXIS2"] + 1) / 2]], 1)[0]
    return float(ra), float(dec)


def sky_offset_deg(ra1: float, dec1: float, ra2: float, dec2: float) -> float:
    d_ra = ((ra1 - ra2 + 180) % 360 - 180) * math.cos(math.radians(dec2))
    return math.hypot(d_ra, dec1 - dec2)


def true_fov(header: dict[str, Any]) -> tuple[float, float]:
    return abs(header["CDELT1"]) * header["NAXIS1"] * 60, abs(header["CDELT2"]) * header["NAXIS2"] * 60


def label_bound_px(true: dict[str, Any]) -> float:
    """What the labels' rounding allows at the edge of a grid: field of view to 0.01',
    orientation to 0.1°, RA to 0.01 s, Dec to 0.01"."""
    fov = true_fov(true)
    radius = math.hypot(true["NAXIS1"], true["NAXIS2"]) / 2
    scale_arcsec = abs(true["CDELT1"]) * 3600
    return radius * (0.005 / min(fov) + math.radians(0.05)) + (0.075 + 0.005) / scale_arcsec + 0.01


# -- the replica has what these tests rely on --------------------------------------------------


def test_the_replica_carries_every_edge_case(site: Site) -> None:
    missing = REQUIRED_EDGES - set(site.truth["edge_cases"])
    assert not missing, missing


# -- every observation of both sites against the truth ---------------------------------------


def test_every_observation_meta_matches_the_truth(site: Site) -> None:
    usable = 0
    for ident, entry in site.observations().items():
        result = site.extract(ident)
        skipped = [SKIPPED[e] for e in entry["edge_cases"] if e in SKIPPED]
        if skipped:
            assert result.meta is None and result.skip_reason == skipped[0], (ident, result.skip_reason)
            continue
        assert result.skip_reason is None and result.meta is not None, (ident, result.skip_reason, result.warnings)
        check_meta(site, ident, entry, result.meta)
        check_cross_check(ident, entry, result.cross_check)
        assert result.meta["cross_check"] == result.cross_check
        usable += 1
    assert usable >= 55, usable


def check_meta(site: Site, ident: str, entry: dict[str, Any], meta: dict[str, Any]) -> None:
    url = site.replica.url
    assert meta["schema"] == 1 and meta["id"] == ident and meta["source"] == site.name
    assert meta["file_name"] == entry["file_name"] and meta["type"] == "Observation"
    assert meta["title"] == entry["title"] and meta["credit"] == entry["credit"], ident
    assert meta["page_url"] == f"{url}/images/{ident}/" and meta["json_url"] == f"{url}/images/{ident}/api/json/"
    assert meta["release_date"] == entry["release_date"] + "+00:00", ident
    assert [meta["pixel_size"]["width"], meta["pixel_size"]["height"]] == entry["declared_size"]
    assert meta["names"] == entry["names"] and meta["constellation"] == entry["constellation"]
    assert meta["distance"] == entry["label_values"].get("Distance:", "")
    assert meta["taxonomy_codes"] == [entry["taxonomy"][0]]
    if site.name == "esahubble":  # the page shows the taxonomy text
        assert meta["category"] == entry["taxonomy"][1] and meta["web_category"] == ""
        assert meta["value_sources"]["category"] == "page"
    else:  # Webb shows a web category only; the taxonomy text comes from the code, as far as it is known
        assert entry["taxonomy"][1].startswith(meta["category"]) and meta["category"].count(" : ") == 1, ident
        assert meta["web_category"] == entry["category"]
    assert meta["licence"] == "CC BY 4.0" and meta["licence_url"] == LICENCE_URL
    for fmt, _ in DOWNLOADS:
        assert meta["image_urls"][fmt] == entry["served"][fmt]["url"]
    assert meta["content_hash"] == content_hash(meta) and len(meta["content_hash"]) == 64
    json.dumps(meta, allow_nan=False)  # JSON-serialisable as it stands

    true = entry["wcs"]
    assert true is not None, ident
    sources = meta["value_sources"]
    if entry["avm_quality"] == "Full":
        assert {sources[k] for k in ("center", "fov", "north_angle", "wcs")} == {"avm"}, ident
        ra, dec = true_centre(true)
        assert sky_offset_deg(meta["center"]["ra_deg"], meta["center"]["dec_deg"], ra, dec) < 1e-6, ident
        assert meta["fov_arcmin"]["x"] == pytest.approx(true_fov(true)[0], abs=1e-3)
        assert meta["fov_arcmin"]["y"] == pytest.approx(true_fov(true)[1], abs=1e-3)
        assert meta["north_angle_deg"] == pytest.approx(true["CROTA2"], abs=1e-9)
        assert meta["pixel_scale_arcsec"] == pytest.approx(abs(true["CDELT1"]) * 3600, rel=1e-9)
        assert max_pixel_difference(meta["wcs"], true) < 1e-6, ident
        wanted_source, tolerance = "json-avm", AVM_PX
    else:  # no spatial AVM at all: the labels, within their rounding
        assert "no_avm_spatial" in entry["edge_cases"], ident
        assert {sources[k] for k in ("center", "fov", "north_angle", "wcs")} == {"labels"}, ident
        assert sky_offset_deg(meta["center"]["ra_deg"], meta["center"]["dec_deg"], *true_centre(true)) < 0.1 / 3600
        assert meta["fov_arcmin"]["x"] == pytest.approx(true_fov(true)[0], abs=0.0051)
        assert meta["fov_arcmin"]["y"] == pytest.approx(true_fov(true)[1], abs=0.0051)
        assert meta["north_angle_deg"] == pytest.approx(true["CROTA2"], abs=0.051)
        wanted_source, tolerance = "labels", label_bound_px(true)
        assert max_pixel_difference(meta["wcs"], true) < tolerance, ident
    # "right of vertical" is a negative north angle, as on the page (unless the labels are wrong).
    assert (meta["north_angle_deg"] < 0) == (true["CROTA2"] < 0), ident
    if "labels_disagree_with_avm" not in entry["edge_cases"]:
        assert (meta["north_angle_deg"] < 0) == ("right_of_vertical" in entry["edge_cases"]), ident
    for size in SIZES:
        served = entry["served"][size]
        header, source = image_wcs(meta, *served["size"], None)
        assert source == wanted_source and header is not None, (ident, size)
        bound = tolerance if source == "json-avm" else label_bound_px(served["wcs"])
        assert max_pixel_difference(header, served["wcs"]) < bound, (ident, size)


def check_cross_check(ident: str, entry: dict[str, Any], cross_check: list[dict[str, Any]]) -> None:
    fields = {c["field"] for c in cross_check}
    if "labels_disagree_with_avm" in entry["edge_cases"]:
        assert fields == {"ra", "dec", "fov_x", "fov_y", "north_angle"}, (ident, cross_check)
        for check in cross_check:
            assert abs(check["difference"]) > check["tolerance"] and check["unit"]
        return
    true_dec = entry["wcs"]["CRVAL2"]
    if entry["avm_quality"] and -1 < true_dec < 0:  # the page drops the minus sign: only the AVM is right
        (check,) = cross_check
        assert check["field"] == "dec" and check["avm"] == pytest.approx(true_dec, abs=1e-12)
        assert check["label"] == pytest.approx(-true_dec, abs=0.01 / 3600) and "minus sign" in check["note"]
        return
    assert cross_check == [], (ident, cross_check)


def test_declination_between_minus_one_and_zero_comes_from_the_avm(site: Site) -> None:
    ident = site.one("dec_between_minus1_and_0")
    entry = site.observations()[ident]
    assert not entry["label_values"]["Position (Dec):"].startswith("-")  # the site's bug is there
    meta = site.extract(ident).meta
    assert meta is not None and meta["center"]["dec_deg"] < 0 and meta["value_sources"]["center"] == "avm"
    assert meta["center"]["dec_deg"] == pytest.approx(true_centre(entry["wcs"])[1], abs=1e-9)


def test_off_centre_reference_pixel_gives_the_grid_centre_not_crval(site: Site) -> None:
    ident = site.one("crpix_off_centre")
    entry = site.observations()[ident]
    meta = site.extract(ident).meta
    assert meta is not None
    crval = entry["wcs"]["CRVAL1"], entry["wcs"]["CRVAL2"]
    centre = meta["center"]["ra_deg"], meta["center"]["dec_deg"]
    assert sky_offset_deg(*centre, *crval) > 0.1 * min(true_fov(entry["wcs"])) / 60  # well off the centre
    assert sky_offset_deg(*centre, *true_centre(entry["wcs"])) < 1e-9


def test_json_quirks_bytes_strings_and_empty_y_scale(site: Site) -> None:
    entry = site.observations()[site.one("json_bytes_strings")]
    doc = site.docs[entry["id"]]
    assert doc["Spatial.CoordsystemProjection"] == "b'TAN'"
    avm = avm_from_json(doc)
    true = entry["wcs"]
    assert avm == SpatialAvm(
        ra=true["CRVAL1"],
        dec=true["CRVAL2"],
        quality="Full",
        projection="TAN",
        reference_dimension=(true["NAXIS1"], true["NAXIS2"]),
        reference_pixel=(true["CRPIX1"], true["CRPIX2"]),
        scale=(true["CDELT1"], true["CDELT2"]),
        rotation=true["CROTA2"],
    )
    entry = site.observations()[site.one("scale_y_empty")]
    doc = site.docs[entry["id"]]
    assert doc["Spatial.Scale"][1] == ""
    avm = avm_from_json(doc)
    assert avm is not None and avm.scale == (entry["wcs"]["CDELT1"], entry["wcs"]["CDELT2"])
    assert avm.pixel_scale_arcsec() == pytest.approx(abs(entry["wcs"]["CDELT1"]) * 3600)


def test_position_only_and_missing_spatial(site: Site) -> None:
    entry = site.observations()[site.one("position_only")]
    avm = avm_from_json(site.docs[entry["id"]])
    assert avm is not None and avm.quality == "Position" and not avm.has_wcs
    assert (avm.ra, avm.dec) == (entry["wcs"]["CRVAL1"], entry["wcs"]["CRVAL2"])
    with pytest.raises(ValueError, match="no full WCS"):
        avm.fov_arcmin()
    for edge in ("no_avm_spatial", "missing_coordinates", "artwork", "solar_system"):
        assert avm_from_json(site.docs[site.one(edge)]) is None, edge


def test_json_or_page_alone_is_enough(site: Site) -> None:
    ident = next(i for i, e in site.observations().items() if e["avm_quality"] == "Full" and not e["edge_cases"])
    entry = site.observations()[ident]
    only_json = site.extract(ident, page=None).meta
    assert only_json is not None and only_json["value_sources"]["wcs"] == "avm"
    assert only_json["title"] == entry["title"] and only_json["value_sources"]["pixel_size"] == "json"
    assert max_pixel_difference(only_json["wcs"], entry["wcs"]) < 1e-6
    assert only_json["constellation"] == ""  # only the page has it
    only_page = site.extract(ident, json_doc=None).meta
    assert only_page is not None and only_page["value_sources"]["wcs"] == "labels"
    assert only_page["title"] == entry["title"] and only_page["credit"] == entry["credit"]
    assert max_pixel_difference(only_page["wcs"], entry["wcs"]) < label_bound_px(entry["wcs"])
    nothing = site.extract(ident, json_doc=None, page=None)
    assert nothing.meta is None and nothing.skip_reason == "no metadata"


def test_skip_thresholds_are_parameters(site: Site) -> None:
    deep = site.one("deep_field")
    assert site.extract(deep, excluded_types=()).meta is not None
    ident = next(i for i, e in site.observations().items() if e["avm_quality"] == "Full" and not e["edge_cases"])
    result = site.extract(ident, min_fov_arcmin=100.0)
    assert result.meta is None and result.skip_reason.startswith("field of view ") and "< 100" in result.skip_reason


def test_non_ascii_credit_and_renamed_file(site: Site) -> None:
    entry = site.observations()[site.one("non_ascii_credit")]
    meta = site.extract(entry["id"]).meta
    assert meta is not None and "Ødegård" in meta["credit"] and meta["credit"] == entry["credit"]
    entry = site.observations()[site.one("file_name_differs")]
    meta = site.extract(entry["id"]).meta
    assert meta is not None and meta["file_name"] == entry["file_name"] != entry["id"]


# -- content hash ---------------------------------------------------------------------------------------


def test_content_hash_is_stable_and_follows_the_content(site: Site) -> None:
    ident = next(i for i, e in site.observations().items() if e["avm_quality"] == "Full" and not e["edge_cases"])
    entry = site.observations()[ident]
    first = site.extract(ident).meta
    refetched = fetch_json(f"{site.replica.url}/images/{ident}/api/json/")
    second = site.extract(ident, json_doc=refetched).meta
    assert first is not None and second is not None and first["content_hash"] == second["content_hash"]
    crawled = dict(
        first,
        images={"screen": {"etag": "x", "sha256": "y", "wcs": {}}},
        validators={"page": {"etag": "z"}},
        crawled_at=datetime.now(UTC).isoformat(),
        withdrawn=False,
        withdrawn_at=None,
    )
    assert content_hash(crawled) == first["content_hash"]
    # The same item from another host (a mirror, a restarted replica) is the same content.
    moved_doc = json.loads(json.dumps(site.docs[ident]).replace(site.replica.url, "https://mirror.example.org"))
    moved_page = json.loads(json.dumps(page_of(entry)).replace(site.replica.url, "https://mirror.example.org"))
    moved = extract(site.name, ident, f"https://mirror.example.org/images/{ident}/", moved_doc, moved_page).meta
    assert moved is not None and moved["content_hash"] == first["content_hash"]
    # Title, credit and WCS changes do change it.
    for key, value in (("Title", "Another title"), ("Credit", "ESA/Hubble, someone else"), ("Spatial.Rotation", 1.5)):
        doc = dict(site.docs[ident], **{key: value})
        changed = site.extract(ident, json_doc=doc).meta
        assert changed is not None and changed["content_hash"] != first["content_hash"], key


# -- embedded AVM in the served files ----------------------------------------------------------------------


def test_embedded_avm_of_served_files(sites: dict[str, Site]) -> None:
    site = sites["esahubble"]
    obs = site.observations()
    normal = next(i for i, e in obs.items() if e["avm_quality"] == "Full" and not e["edge_cases"])
    for ident in (normal, site.one("avm_reference_dimension_mismatch")):
        entry = obs[ident]
        served = entry["served"]["screen"]
        avm = avm_from_image(fetch(served["url"]))
        assert avm is not None and avm.has_wcs and avm.quality == "Full", ident
        if served["embedded_avm"] == "declared":  # the XMP refers to the original, not to this file
            assert list(avm.reference_dimension) == entry["declared_size"] != served["size"]
        else:
            assert list(avm.reference_dimension) == served["size"]
        assert max_pixel_difference(avm.header(*served["size"]), served["wcs"]) < AVM_PX, ident
        # Without the JSON's AVM the file's own AVM wins over the labels.
        meta = site.extract(ident, json_doc=None).meta
        assert meta is not None and meta["value_sources"]["wcs"] == "labels"
        header, source = image_wcs(meta, *served["size"], avm)
        assert source == "embedded-avm" and max_pixel_difference(header, served["wcs"]) < AVM_PX, ident
        # A file of another aspect ratio is not the one the AVM describes.
        width, height = served["size"]
        assert image_wcs({"value_sources": {}}, width, height * 2, avm) == (None, "")
    position = obs[site.one("position_only")]
    avm = avm_from_image(fetch(position["served"]["screen"]["url"]))
    assert avm is not None and avm.quality == "Position" and not avm.has_wcs
    assert (avm.ra, avm.dec) == pytest.approx((position["wcs"]["CRVAL1"], position["wcs"]["CRVAL2"]), abs=1e-9)
    # No spatial AVM (the XMP still has the title and credit): nothing.
    assert avm_from_image(fetch(obs[site.one("no_avm_spatial")]["served"]["screen"]["url"])) is None
    assert avm_from_image(b"\xff\xd8\xff\xe0 not really a JPEG") is None


# -- parsers ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "hours"),
    [
        ("19 54 7.92", 19 + 54 / 60 + 7.92 / 3600),
        ("19:54:07.92", 19 + 54 / 60 + 7.92 / 3600),
        ("19h54m07.92s", 19 + 54 / 60 + 7.92 / 3600),
        ("  0 0 0.00 ", 0.0),
        ("23 59 60.00", 24.0 - 0.0),  # %.2f rounding on the site can print 60.00 seconds
        ("5 20", 5 + 20 / 60),
    ],
)
def test_parse_ra(text: str, hours: float) -> None:
    assert parse_ra(text) == pytest.approx((hours * 15) % 360, abs=1e-9)


@pytest.mark.parametrize(
    ("text", "degrees"),
    [
        ("60° 24' 48.46\"", 60 + 24 / 60 + 48.46 / 3600),
        ("-00 12 34", -(12 / 60 + 34 / 3600)),
        ("-0° 12' 3.5\"", -(12 / 60 + 3.5 / 3600)),
        ("78&deg 23' 11.27\"", 78 + 23 / 60 + 11.27 / 3600),  # the entity without its semicolon
        ("78&deg; 23' 11.27\"", 78 + 23 / 60 + 11.27 / 3600),
        ("\u22120\u00b0 12\u2032 3\u2033", -(12 / 60 + 3 / 3600)),  # unicode minus, primes
        ("+05:06:07", 5 + 6 / 60 + 7 / 3600),
        ("0° 0' 41.45\"", 41.45 / 3600),  # what the site shows for -0.0115: the sign is lost there
        ("-89 59 59.99", -(89 + 59 / 60 + 59.99 / 3600)),
    ],
)
def test_parse_dec(text: str, degrees: float) -> None:
    assert parse_dec(text) == pytest.approx(degrees, abs=1e-12)


def test_parse_dec_keeps_the_sign_of_minus_zero() -> None:
    assert parse_dec("-00 00 01") < 0 and math.copysign(1, parse_dec("-0 0 0")) == -1


@pytest.mark.parametrize(
    ("text", "fov"),
    [
        ("4.66 x 6.22 arcminutes", (4.66, 6.22)),
        ("11.07 x 7.61 arcminutes", (11.07, 7.61)),
        ("4.66x6.22 arcmin", (4.66, 6.22)),
        ("30 x 45 arcseconds", (0.5, 0.75)),
        ("0.5 \u00d7 0.25 degrees", (30.0, 15.0)),
        ("2.37 x 1.99", (2.37, 1.99)),
    ],
)
def test_parse_fov(text: str, fov: tuple[float, float]) -> None:
    assert parse_fov(text) == pytest.approx(fov)


@pytest.mark.parametrize(
    ("text", "angle"),
    [
        ("North is 102.8° left of vertical", 102.8),
        ("North is 3.6° right of vertical", -3.6),
        ("North is 110.2&deg; left of vertical", 110.2),
        ("North is 110.2&deg right of vertical", -110.2),
        ("North is 0.0° left of vertical", 0.0),
        ("North is up", 0.0),
    ],
)
def test_parse_orientation(text: str, angle: float) -> None:
    assert parse_orientation(text) == pytest.approx(angle)


def test_parse_release_and_size() -> None:
    assert parse_release("9 March 2013, 15:00") == datetime(2013, 3, 9, 15, 0, tzinfo=UTC)
    assert parse_release("8 May 2023, 06:00").isoformat() == "2023-05-08T06:00:00+00:00"
    assert parse_release("2013-03-09T15:00:00") == datetime(2013, 3, 9, 15, tzinfo=UTC)
    assert parse_release("2013-03-09T15:00:00Z") == datetime(2013, 3, 9, 15, tzinfo=UTC)
    assert parse_size("5380 x 7173 px") == (5380, 7173)
    assert parse_size("24000 x 13500 px") == (24000, 13500)


@pytest.mark.parametrize(
    ("parser", "text", "message"),
    [
        (parse_ra, "", "cannot parse RA"),
        (parse_ra, "25 00 00", "hours must be in"),
        (parse_ra, "12 61 00", "below 60"),
        (parse_ra, "-1 00 00", "hours must be in"),
        (parse_ra, "twelve", "cannot parse RA"),
        (parse_dec, "91 00 00", "beyond the pole"),
        (parse_dec, "10 -5 00", "only the first part"),
        (parse_dec, "1 2 3 4", "1 to 3 numbers"),
        (parse_fov, "big", "cannot parse field of view"),
        (parse_fov, "0 x 3 arcminutes", "positive"),
        (parse_orientation, "North is somewhere", "cannot parse orientation"),
        (parse_orientation, "North is 200° left of vertical", "within 0..180"),
        (parse_release, "yesterday", "cannot parse release date"),
        (parse_size, "big x small", "cannot parse size"),
    ],
)
def test_parsers_reject_bad_input_with_a_clear_message(parser, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parser(text)


def test_taxonomy_text_from_codes() -> None:
    assert taxonomy_text("C.5.1.1") == "Local Universe : Galaxy"
    assert taxonomy_text("D.6.1.2") == "Early Universe : Cosmology"
    assert taxonomy_text("A.1.1.4") == "Solar System : Planet"
    assert taxonomy_text("b'B.4.1.3'") == "Milky Way : Nebula"
    assert taxonomy_text("E.0") == "Unspecified"
    assert taxonomy_text("Z.9") == ""


def test_a_bad_label_is_a_warning_not_a_crash(sites: dict[str, Site]) -> None:
    site = sites["esahubble"]
    ident = site.one("no_avm_spatial")
    page = copy.deepcopy(page_of(site.observations()[ident]))
    for row in page["rows"]:
        if row[1] == "Orientation:":
            row[2] = "North is somewhere else"
    result = site.extract(ident, page=page)
    assert result.meta is not None and result.meta["north_angle_deg"] is None
    assert any("orientation" in w for w in result.warnings) and result.meta["warnings"] == result.warnings
    # Without an orientation the labels make no WCS (rotation 0 would be a wrong one).
    assert result.meta["wcs"] is None and image_wcs(result.meta, 640, 853, None) == (None, "")
