"""The images an archive replica publishes: deterministic from the sky and the site.

Each observation is a field centred on an interesting source near a seeded sky
position: mostly the nearest of the sky's landmarks (clusters, nebulae, big
galaxies; ``Sky.landmarks``), otherwise the biggest galaxy ``Sky.sources`` finds
there, plus the real imagery the sky carries (the Hubble XDF, M1, M13), seen as
Hubble or Webb would show it. Around those sit the edge cases a real crawl
meets (see ``EDGE_SLOTS``), a few Solar System images and artist's impressions.
How the set changes between crawls is in ``archive_generations``.
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from astropy.coordinates import SkyCoord, get_constellation
from astropy.table import Table

from services.universe.cells import angular_separation_deg
from services.universe.replicas.archive_avm import FieldWcs

if TYPE_CHECKING:
    from services.universe.sky import Sky

SITES = ("esahubble", "esawebb")
N_SKY = 64  # deep-sky observations per site in generation 0
N_SOLAR_SYSTEM = 2
N_ARTWORK = 3
SEARCH_RADIUS_DEG = 0.3
HUGE_WIDTH, HUGE_HEIGHT = 24000, 13500
GENERATION_BASE = datetime(2025, 11, 3, 15, 0)  # generation k is published k weeks after this

# Slot of the deep-sky list -> the edge case it carries (same slots on both sites).
EDGE_SLOTS: dict[int, str] = {
    0: "huge_image",
    1: "dec_between_minus1_and_0",
    2: "missing_coordinates",
    3: "image_404",
    4: "slow_page",
    5: "throttled_429",
    6: "malformed_html",
    7: "non_ascii_credit",
    8: "no_avm_spatial",
    9: "avm_reference_dimension_mismatch",
    10: "labels_disagree_with_avm",
    11: "position_only",
    12: "json_bytes_strings",
    13: "scale_y_empty",
    14: "file_name_differs",
    15: "crpix_off_centre",
    16: "deep_field",
}
REAL_IMAGE_SLOTS = {16: ("hubble-xdf", "deepfield"), 17: ("m1-poss1", "nebula"), 18: ("m13-skyview", "cluster")}
BORDER_SLOTS = (20, 27, 33)  # black missing-data frames
CHIP_GAP_SLOTS = (22, 29, 41)
BOX_SLOTS = (24, 38)


@dataclass(frozen=True)
class Defects:
    """Missing-data regions in fractions of the image, so every served size agrees."""

    border: float = 0.0
    chip_gap: bool = False
    boxes: tuple[tuple[float, float, float, float], ...] = ()


@dataclass(frozen=True)
class Observation:
    id: str
    site: str
    type: str  # AVM Type: "Observation" or "Artwork"
    kind: str  # galaxy, cluster, nebula, deepfield, field, solar_system, artwork
    title: str
    description: str
    credit: str
    names: tuple[str, ...]
    taxonomy: tuple[str, str]  # (AVM Subject.Category code, its text)
    category: str  # the web category (Webb pages show it as a link)
    distance: str  # label text; "" when unknown
    distance_ly: float | None
    distance_z: float | None
    constellation: str
    release: datetime
    modified: datetime
    width: int  # declared original size
    height: int
    wcs: FieldWcs | None  # the true WCS at the declared size; None: not a sky image
    source_id: str = ""  # the sky source the field is centred on
    avm_quality: str = "Full"  # "Full", "Position" or "" (no spatial AVM at all)
    label_wcs: FieldWcs | None = None  # what the page labels summarise (None: no labels)
    embed_original_avm: bool = False  # XMP refers to the declared size, not the served one
    file_id: str = ""  # file name on the CDN when it is not the id
    style: str = "hubble"
    defects: Defects = field(default_factory=Defects)
    edge_cases: tuple[str, ...] = ()
    potw: str = ""
    priority: int = 50
    version: int = 0  # bumped when a generation changes the image itself
    image_modified: datetime | None = None  # when the file itself last changed (None: at release)

    @property
    def file_modified(self) -> datetime:
        """The CDN's file validators follow the file, not the page: a new title leaves them alone."""
        return self.image_modified or self.release

    @property
    def file_name(self) -> str:
        return self.file_id or self.id

    @property
    def listed_as_observation(self) -> bool:
        return self.type == "Observation"


@dataclass(frozen=True)
class SiteProfile:
    name: str
    style: str
    facility: str
    facility_id: int
    instrument: tuple[str, ...]
    agency: str  # credit prefix
    schemes: tuple[tuple[str, float, int, int], ...]  # (prefix, weight, first year, last year)


PROFILES = {
    "esahubble": SiteProfile(
        "esahubble",
        "hubble",
        "Hubble Space Telescope",
        2,
        ("ACS", "WFC3", "WFPC2"),
        "ESA/Hubble & NASA",
        (("heic", 0.45, 2004, 2025), ("potw", 0.4, 2010, 2025), ("opo", 0.15, 1996, 2008)),
    ),
    "esawebb": SiteProfile(
        "esawebb",
        "webb",
        "James Webb Space Telescope",
        1,
        ("NIRCam", "MIRI", "NIRSpec"),
        "ESA/Webb, NASA & CSA",
        (("weic", 0.55, 2022, 2025), ("potm", 0.45, 2022, 2025)),
    ),
}

SURNAMES = ("Lee", "Okafor", "Schmidt", "Rossi", "Tanaka", "Martin", "Kowalski", "Haddad", "Silva", "Novak")
NON_ASCII_CREDIT_TAIL = "M. Ødegård, Z. Núñez, J. Weiß; Acknowledgement: Łukasz Wróbel, Gábor Tóth"
TAXONOMY = {
    "spiral": ("C.5.1.1", "Local Universe : Galaxy : Type : Spiral"),
    "barred": ("C.5.1.2", "Local Universe : Galaxy : Type : Barred Spiral"),
    "lenticular": ("C.5.1.3", "Local Universe : Galaxy : Type : Lenticular"),
    "elliptical": ("C.5.1.4", "Local Universe : Galaxy : Type : Elliptical"),
    "irregular": ("C.5.1.7", "Local Universe : Galaxy : Type : Irregular"),
    "cluster": ("B.3.6.4", "Milky Way : Star : Grouping : Cluster"),
    "globular": ("B.3.6.4.2", "Milky Way : Star : Grouping : Cluster : Globular"),
    "nebula": ("B.4.1.2", "Milky Way : Nebula : Type : Emission"),
    "planetary": ("B.4.1.3", "Milky Way : Nebula : Type : Planetary"),
    "deepfield": ("D.6.1.2", "Early Universe : Cosmology : Morphology : Deep Field"),
    "field": ("E.0", "Unspecified"),
    "solar_system": ("A.1.1.4", "Solar System : Planet : Type : Gas Giant"),
    "artwork": ("B.1.4", "Milky Way : Planet : Type : Gas Giant"),
}
CATEGORY = {
    "galaxy": "Galaxies",
    "cluster": "Star Clusters",
    "nebula": "Nebulae",
    "deepfield": "Cosmology",
    "field": "Stars",
    "solar_system": "Solar System",
    "artwork": "Artwork",
}


def seeded_rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(list(key))


def site_code(site: str) -> int:
    return SITES.index(site) + 1


def _hash_number(text: str, modulo: int) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") % modulo


# -- picking fields on the sky ---------------------------------------------------


@dataclass(frozen=True)
class _Pick:
    ra: float
    dec: float
    kind: str
    subtype: str
    size_arcsec: float
    source_id: str
    redshift: float


@lru_cache(maxsize=4)
def _landmarks(sky: Sky) -> Table:
    """The sky's showy objects (clusters, nebulae, big galaxies, real imagery), whole sky."""
    return sky.landmarks()


def _as_pick(row: Any, colnames: list[str]) -> _Pick:
    return _Pick(
        float(row["ra"]),
        float(row["dec"]),
        str(row["kind"]),
        str(row["subtype"]) if "subtype" in colnames else "",
        float(row["size_arcsec"]),
        str(row["id"]),
        float(row["redshift"]) if "redshift" in colnames else 0.0,
    )


def _random_position(rng: np.random.Generator, dec_range: tuple[float, float] | None) -> tuple[float, float]:
    ra = float(rng.uniform(0, 360))
    if dec_range:
        return ra, float(rng.uniform(dec_range[0] + 0.15, dec_range[1] - 0.15))
    return ra, math.degrees(math.asin(rng.uniform(-0.97, 0.97)))


def _pick_target(sky: Sky, rng: np.random.Generator, used: set[str], dec_range: tuple[float, float] | None) -> _Pick:
    """A field centre: mostly the showy object nearest a seeded position, otherwise the
    biggest ordinary galaxy near one (the archives show both)."""
    if dec_range is None and rng.random() < 0.7:
        marks = _landmarks(sky)
        ra, dec = _random_position(rng, None)
        order = np.argsort(angular_separation_deg(np.asarray(marks["ra"]), np.asarray(marks["dec"]), ra, dec))
        for i in order:
            row = marks[int(i)]
            if str(row["kind"]) != "image" and str(row["id"]) not in used:
                used.add(str(row["id"]))
                return _as_pick(row, marks.colnames)
    ra = dec = 0.0
    for _ in range(20):
        ra, dec = _random_position(rng, dec_range)
        table = sky.sources(ra, dec, SEARCH_RADIUS_DEG, mag_limit=19.0)
        ok = np.isin(np.asarray(table["kind"]), ("galaxy", "cluster", "nebula"))
        ok &= ~np.isin(np.asarray(table["id"]), list(used))
        if dec_range:
            ok &= (np.asarray(table["dec"]) > dec_range[0]) & (np.asarray(table["dec"]) < dec_range[1])
        if ok.any():
            sizes = np.where(ok, np.asarray(table["size_arcsec"], dtype=float), -1.0)
            row = table[int(np.argmax(sizes))]
            used.add(str(row["id"]))
            return _as_pick(row, table.colnames)
    return _Pick(ra, dec, "field", "", 0.0, "", 0.0)


def _pick_image(sky: Sky, subtype: str) -> _Pick:
    """Real imagery the sky model carries at its true position (the Hubble XDF, M1, M13)."""
    marks = _landmarks(sky)
    for row in marks:
        if str(row["kind"]) == "image" and str(row["subtype"]) == subtype:
            return _as_pick(row, marks.colnames)
    raise LookupError(f"the sky has no real image {subtype!r}")


# -- the observations -------------------------------------------------------------


def _kind_and_taxonomy(pick: _Pick, rng: np.random.Generator) -> tuple[str, tuple[str, str]]:
    sub = pick.subtype.lower()
    if pick.kind == "galaxy":
        for key in ("barred", "spiral", "lenticular", "elliptical", "irregular"):
            if key in sub:
                return "galaxy", TAXONOMY[key]
        return "galaxy", TAXONOMY[("spiral", "elliptical", "irregular")[int(rng.integers(3))]]
    if pick.kind == "cluster":
        return "cluster", TAXONOMY["globular" if "glob" in sub else "cluster"]
    if pick.kind == "nebula":
        return "nebula", TAXONOMY["planetary" if "plan" in sub else "nebula"]
    return "field", TAXONOMY["field"]


def _name(kind: str, source_id: str) -> str:
    prefix = {"galaxy": "LSG", "cluster": "LSC", "nebula": "LSN", "deepfield": "LSD"}.get(kind, "LSF")
    return f"{prefix} {_hash_number(source_id or kind, 90000) + 10000}"


def _title(kind: str, word: str, constellation: str, rng: np.random.Generator) -> str:
    a = f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"
    options = {
        "galaxy": (
            f"{a.capitalize()} galaxy in {constellation}",
            f"{word.capitalize()} galaxy in close-up",
            "Galactic glow",
        ),
        "cluster": (
            f"{a.capitalize()} cluster in {constellation}",
            "A jewel box of stars",
            f"Stars gather in {constellation}",
        ),
        "nebula": (
            f"{a.capitalize()} nebula in {constellation}",
            f"Glowing gas in {constellation}",
            "Clouds of gas and dust",
        ),
        "deepfield": (f"Deep field in {constellation}", "Thousands of galaxies", "Looking back in time"),
        "field": (f"A crowded field in {constellation}", "Stars and more stars", "Starry backdrop"),
    }[kind]
    return options[int(rng.integers(len(options)))]


def _title_word(kind: str, pick: _Pick, taxonomy_text: str) -> str:
    sub = pick.subtype.lower()
    if kind == "cluster":
        return "globular" if "glob" in sub or "m13" in sub else "open" if "open" in sub else "star"
    if kind == "nebula":
        return "planetary" if "plan" in sub else "supernova remnant" if "m1-" in sub else "emission"
    return taxonomy_text.rsplit(" : ", 1)[-1].lower()


def _distance(kind: str, pick: _Pick, rng: np.random.Generator) -> tuple[str, float | None, float | None]:
    if kind == "deepfield":
        return "", None, round(float(rng.uniform(0.5, 3.0)), 2)  # deep fields have no single distance
    if kind == "galaxy":
        z = pick.redshift if pick.redshift > 0 else float(rng.uniform(0.002, 0.05))
        ly = z * 299792.458 / 70.0 * 3.2616e6  # Hubble's law, Mpc -> light years (rough is fine here)
        if ly >= 1e9:
            return f"{ly / 1e9:.0f} billion light years", ly, round(z, 4)
        return f"{ly / 1e6:.0f} million light years", ly, round(z, 4)
    if pick.kind == "cluster" and pick.redshift > 0:  # the sky keeps cluster distances in kpc there
        ly = float(round(pick.redshift * 3261.56, -2))
    else:
        ly = float(round(rng.uniform(1000, 30000), -2))
    return f"{int(ly)} light years", ly, None


def _credit(profile: SiteProfile, rng: np.random.Generator, non_ascii: bool) -> str:
    if non_ascii:
        return f"{profile.agency}, {NON_ASCII_CREDIT_TAIL}"
    names = [f"{chr(65 + int(rng.integers(26)))}. {SURNAMES[int(rng.integers(len(SURNAMES)))]}" for _ in range(2)]
    tail = ", ".join(names) if rng.random() < 0.5 else f"{names[0]} et al."
    return f"{profile.agency}, {tail}"


def _field(pick: _Pick, kind: str, profile: SiteProfile, rng: np.random.Generator, huge: bool) -> FieldWcs:
    size = max(pick.size_arcsec, 2.0)
    factor = rng.uniform(6, 14) if kind == "galaxy" else rng.uniform(2.2, 4.0)
    if pick.kind == "image":  # stay inside the real imagery
        fov = float(np.clip(size * 1.2 / 60, 0.6, 8.0))
    elif kind in ("galaxy", "cluster", "nebula"):
        fov = float(np.clip(size * factor / 60, 0.6, 8.0))
    else:
        fov = 0.6 + 7.4 * float(rng.random())
    aspect = ((4, 3), (16, 9), (1, 1), (3, 4), (3, 2), (16, 10))[int(rng.integers(6))]
    if huge:
        width, height, fov = HUGE_WIDTH, HUGE_HEIGHT, max(fov, 6.0)
    else:
        native = (
            (0.04, 0.05, 0.1)[int(rng.integers(3))]
            if profile.style == "hubble"
            else (0.031, 0.063)[int(rng.integers(2))]
        )
        width = int(np.clip(round(fov * 60 / native), 900, 12000))
        height = round(width * aspect[1] / aspect[0])
    roll = rng.random()
    rotation = float(rng.uniform(-180, 180)) if roll < 0.55 else float(rng.uniform(-8, 8)) if roll < 0.85 else 0.0
    return FieldWcs.centred(pick.ra, pick.dec, fov, width, height, rotation)


def _off_centre(wcs: FieldWcs, rng: np.random.Generator) -> FieldWcs:
    """The same field with its reference pixel moved away from the centre."""
    px = wcs.crpix[0] + wcs.width * float(rng.uniform(0.15, 0.3)) * (1 if rng.random() < 0.5 else -1)
    py = wcs.crpix[1] + wcs.height * float(rng.uniform(0.15, 0.3)) * (1 if rng.random() < 0.5 else -1)
    ra, dec = wcs.to_wcs().pixel_to_world_values(px - 1, py - 1)
    return FieldWcs.rounded(float(ra), float(dec), (px, py), wcs.scale, wcs.rotation, wcs.width, wcs.height)


def _wrong_labels(wcs: FieldWcs) -> FieldWcs:
    """Labels a few arcminutes off, a rotation of the other sign and another scale: the
    kind of disagreement the real site's hand-entered metadata sometimes has."""
    dec = wcs.dec + 0.07 if wcs.dec < 80 else wcs.dec - 0.07
    rotation = -wcs.rotation if abs(wcs.rotation) > 20 else wcs.rotation + 90
    return FieldWcs.rounded(wcs.ra + 0.05, dec, wcs.crpix, wcs.scale * 1.3, rotation, wcs.width, wcs.height)


def _constellation(ra: float, dec: float) -> str:
    return str(get_constellation(SkyCoord(ra, dec, unit="deg")))


def sky_observation(sky: Sky, profile: SiteProfile, slot: int, used: set[str], step: int = 0) -> Observation:
    code = site_code(profile.name)
    rng = seeded_rng(sky.seed, code, step, slot)
    edge = EDGE_SLOTS.get(slot, "") if step == 0 else ""
    real = REAL_IMAGE_SLOTS.get(slot) if step == 0 else None
    if real:
        pick = _pick_image(sky, real[0])
        kind, taxonomy = real[1], TAXONOMY[real[1]] if real[1] != "cluster" else TAXONOMY["globular"]
    else:
        pick = _pick_target(sky, rng, used, (-1.0, 0.0) if edge == "dec_between_minus1_and_0" else None)
        kind, taxonomy = _kind_and_taxonomy(pick, rng)
    wcs = _field(pick, kind, profile, rng, huge=edge == "huge_image")
    if edge == "crpix_off_centre":
        wcs = _off_centre(wcs, rng)
    constellation = _constellation(wcs.ra, wcs.dec)
    distance, ly, z = _distance(kind, pick, rng)
    defects = Defects(
        border=0.03 if slot in BORDER_SLOTS else 0.0,
        chip_gap=slot in CHIP_GAP_SLOTS,
        boxes=((0.0, 0.0, 0.35, 0.25),) if slot in BOX_SLOTS else (),
    )
    quality = {"missing_coordinates": "", "no_avm_spatial": "", "position_only": "Position"}.get(edge, "Full")
    label_wcs = None if edge == "missing_coordinates" else _wrong_labels(wcs) if edge.startswith("labels_") else wcs
    edges = [edge] if edge else []
    if real:
        edges.append("real_imagery")
    if label_wcs and quality != "Position" and label_wcs.rotation < 0:
        edges.append("right_of_vertical")  # the orientation label says "right"
    if any((defects.border, defects.chip_gap, defects.boxes)):
        edges.append("black_regions")
    title = _title(kind, _title_word(kind, pick, taxonomy[1]), constellation, rng)
    return Observation(
        id="",
        site=profile.name,
        type="Observation",
        kind=kind,
        title=title,
        description=f"This image from the {profile.facility} shows {title[0].lower() + title[1:]}.",
        credit=_credit(profile, rng, non_ascii=edge == "non_ascii_credit"),
        names=(_name(kind, pick.source_id),),
        taxonomy=taxonomy,
        category=CATEGORY[kind],
        distance=distance,
        distance_ly=ly,
        distance_z=z,
        constellation=constellation,
        release=GENERATION_BASE,
        modified=GENERATION_BASE,
        width=wcs.width,
        height=wcs.height,
        wcs=wcs,
        source_id=pick.source_id,
        avm_quality=quality,
        label_wcs=label_wcs,
        embed_original_avm=edge == "avm_reference_dimension_mismatch",
        style=profile.style,
        defects=defects,
        edge_cases=tuple(edges),
        priority=int(rng.integers(20, 100)),
    )


def _synthetic_observation(sky: Sky, profile: SiteProfile, slot: int, kind: str) -> Observation:
    rng = seeded_rng(sky.seed, site_code(profile.name), 0, slot)
    if kind == "solar_system":
        planet = ("Jupiter", "Saturn", "Uranus", "Neptune")[int(rng.integers(4))]
        title, names, description = f"{planet} in colour", (planet,), f"A portrait of {planet}."
        width, height = 2400, 2400
    else:
        title = ("Artist's impression of a hot Jupiter", "Artist's impression of a protoplanetary disc")[slot % 2]
        names, description = ("Exoplanet",), "This illustration shows what the system might look like."
        width, height = 3840, 2160
    return Observation(
        id="",
        site=profile.name,
        type="Observation" if kind == "solar_system" else "Artwork",
        kind=kind,
        title=title,
        description=description,
        credit=f"{profile.agency}, {'M. Kornmesser' if kind == 'artwork' else 'A. Simon (NASA Goddard)'}",
        names=names,
        taxonomy=TAXONOMY[kind],
        category=CATEGORY[kind],
        distance="",
        distance_ly=None,
        distance_z=None,
        constellation="",
        release=GENERATION_BASE,
        modified=GENERATION_BASE,
        width=width,
        height=height,
        wcs=None,
        avm_quality="",
        style=profile.style,
        edge_cases=(kind,),
        priority=int(rng.integers(20, 100)),
    )


# -- release dates and ids ----------------------------------------------------------


def _release_date(profile: SiteProfile, rng: np.random.Generator, scheme: tuple[str, float, int, int]) -> datetime:
    prefix, _, first, last = scheme
    start = datetime(first, 7 if prefix in ("weic", "potm") and first == 2022 else 1, 12)
    end = min(datetime(last, 12, 31), GENERATION_BASE - timedelta(days=7))
    day = start + timedelta(days=int(rng.integers(0, (end - start).days)))
    if prefix in ("potw", "potm"):
        day -= timedelta(days=day.weekday())  # pictures of the week/month come out on Mondays
        return day.replace(hour=6, minute=0)
    return day.replace(hour=(14, 15, 16)[int(rng.integers(3))], minute=0)


def _assign_ids(observations: list[Observation], profile: SiteProfile, seed: int, taken: set[str]) -> list[Observation]:
    """Release dates by id scheme, then ids from the dates (heicYYNNa, potwYYWWa, ...)."""
    weights = np.array([s[1] for s in profile.schemes])
    dated: list[tuple[datetime, str, int]] = []
    for index in range(len(observations)):
        rng = seeded_rng(seed, site_code(profile.name), 7, index)
        scheme = profile.schemes[int(rng.choice(len(weights), p=weights / weights.sum()))]
        dated.append((_release_date(profile, rng, scheme), scheme[0], index))
    counters: dict[tuple[str, int], int] = {}
    result: list[Observation] = list(observations)
    previous: tuple[str, datetime, str] | None = None
    for when, prefix, index in sorted(dated):
        rng = seeded_rng(seed, site_code(profile.name), 8, index)
        yy = when.year % 100
        if prefix in ("potw", "potm"):
            number = when.isocalendar()[1] if prefix == "potw" else when.month
            stem = f"{prefix}{yy:02d}{number:02d}"
        elif previous and previous[0].startswith(prefix) and previous[0][:-1] in taken and rng.random() < 0.25:
            stem, when = previous[0][:-1], previous[1]  # a second image of the same release
        else:
            counters[(prefix, yy)] = counters.get((prefix, yy), 0) + 1
            stem = f"{prefix}{yy:02d}{counters[(prefix, yy)]:02d}"
        letter = "a"
        while stem + letter in taken:
            letter = chr(ord(letter) + 1)
        ident = stem + letter
        taken.add(ident)
        taken.add(stem)
        previous = (ident, when, prefix)
        obs = replace(result[index], id=ident, release=when, modified=when)
        if prefix in ("potw", "potm"):
            obs = replace(obs, potw=when.strftime("%d %B %Y").lstrip("0"))
        if "file_name_differs" in obs.edge_cases:
            obs = replace(obs, file_id=f"{ident}_hires")
        result[index] = obs
    return result


def base_catalogue(sky: Sky, site: str) -> list[Observation]:
    """Generation 0 of a site, newest first."""
    profile = PROFILES[site]
    used: set[str] = set()
    observations = [sky_observation(sky, profile, slot, used) for slot in range(N_SKY)]
    observations += [_synthetic_observation(sky, profile, N_SKY + i, "solar_system") for i in range(N_SOLAR_SYSTEM)]
    first_art = N_SKY + N_SOLAR_SYSTEM
    observations += [_synthetic_observation(sky, profile, first_art + i, "artwork") for i in range(N_ARTWORK)]
    observations = _assign_ids(observations, profile, sky.seed, set())
    return sorted(observations, key=lambda o: (o.release, o.id), reverse=True)


def _code_digest() -> str:
    """A digest of the universe's code: a cached catalogue is reused only by the code that made it."""
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parents[1]
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def cached_base_catalogue(sky: Sky, site: str, cache_dir: Path) -> list[Observation]:
    """base_catalogue, kept on disk: choosing the fields takes seconds (a whole-sky landmark
    search), and the result depends only on the code, the site and the seed."""
    path = Path(cache_dir) / "catalogues" / f"{site}-{sky.seed}-{_code_digest()}.pickle"
    try:
        with path.open("rb") as fh:
            return pickle.load(fh)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError):
        pass
    observations = base_catalogue(sky, site)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with tmp.open("wb") as fh:
        pickle.dump(observations, fh)
    os.replace(tmp, path)  # atomic: a parallel reader sees all of it or nothing
    return observations
