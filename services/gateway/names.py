"""Object names to sky positions: CDS Sesame when it answers, else the offline catalogue.

`NameResolver(sesame_url, timeout_s).resolve("Whirlpool Galaxy")` asks Sesame
(``{sesame_url}/-oI/SNV?{name}``: SIMBAD, then NED, then VizieR, plain-text answer with all
identifiers) and falls back to the offline catalogue (data/catalogue.csv, from OpenNGC: every
Messier object and the brighter NGC/IC objects) when Sesame is not configured, unreachable,
slow, erroring, or does not know the name. After a failed call Sesame is left alone for
``retry_after_s`` so that an outage costs one timeout, not one per request. Positive answers
are cached in-process (LRU).

The size (major axis, arcmin) comes from the catalogue when the object is in it (looked up by
the name asked and by every identifier Sesame returns), else from Sesame's ``%D`` line, else
0.0. Nothing here needs the network at import, astropy or pyongc.
"""

from __future__ import annotations

import contextlib
import csv
import http.client
import logging
import math
import re
import threading
import time
import unicodedata
import urllib.error
import urllib.parse
import urllib.request
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from services.runtime.errors import InvalidArgument, NotFound

log = logging.getLogger("prettyspace.gateway.names")

CATALOGUE_PATH = Path(__file__).resolve().parent / "data" / "catalogue.csv"
MAX_NAME_CHARS = 200
MAX_RESPONSE_BYTES = 256 * 1024  # a Sesame answer for one name is a few hundred bytes
SESAME_QUERY = "-oI/SNV"  # -oI: list every identifier; SNV: SIMBAD, then NED, then VizieR, first found wins

# Catalogue words people spell out, to the abbreviation the catalogue uses.
_SPELLED_OUT = {"messier": "m", "caldwell": "c", "melotte": "mel", "collinder": "cr"}
_SPELLED_OUT_RE = re.compile(r"^(" + "|".join(_SPELLED_OUT) + r")(?=\d)")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class Resolved:
    name: str  # the object's designation as the resolver gives it ("M 51", "NGC 7000")
    ra_deg: float  # ICRS / J2000
    dec_deg: float
    size_arcmin: float  # major axis; 0.0 when unknown
    resolver: str  # "sesame" | "offline-catalogue"


@dataclass(frozen=True)
class CatalogueEntry:
    name: str
    type: str  # OpenNGC's type code: G, OCl, GCl, PN, HII, Neb, SNR, ...
    ra_deg: float
    dec_deg: float
    major_arcmin: float  # 0.0 when unknown
    minor_arcmin: float
    vmag: float | None
    aliases: tuple[str, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


def normalise(name: str) -> str:
    """The lookup key of a name: case, spacing, punctuation and zero padding do not matter, so
    "M 51" == "M51" == "messier 51" == "m051" and "NGC 224" == "NGC0224" == "ngc  224";
    "Stephan's Quintet" == "stephans quintet". Signs and dashes between digits are kept
    (MCG +07-02-016, ESO 56-115)."""
    text = unicodedata.normalize("NFKC", name).casefold()
    text = re.sub(r"(?<=\d)-(?=\d)", "\x00", text)  # keep dashes inside numbers, drop the others
    text = re.sub(r"[^\w+\x00]|_", "", text).replace("\x00", "-")
    text = _SPELLED_OUT_RE.sub(lambda m: _SPELLED_OUT[m.group(1)], text)
    return re.sub(r"(?<!\d)0+(?=\d)", "", text)  # NGC0224 -> ngc224


class Catalogue:
    """The offline catalogue, indexed by every normalised name of every object."""

    def __init__(self, entries: list[CatalogueEntry]) -> None:
        self.entries = entries
        self._index: dict[str, CatalogueEntry] = {}
        # Designations first, so an alias shared by two objects never hides an object's own name;
        # a common name shared by two (Eagle Nebula: M 16 and IC 4703) goes to the Messier or brighter one.
        for entry in entries:
            self._index.setdefault(normalise(entry.name), entry)
        by_fame = sorted(entries, key=lambda e: (not e.name.startswith("M "), e.vmag if e.vmag is not None else 99.0))
        for entry in by_fame:
            for alias in entry.aliases:
                self._index.setdefault(normalise(alias), entry)

    def __len__(self) -> int:
        return len(self.entries)

    def lookup(self, name: str) -> CatalogueEntry | None:
        return self._index.get(normalise(name))


@lru_cache(maxsize=4)
def load_catalogue(path: Path = CATALOGUE_PATH) -> Catalogue:
    entries = []
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            entries.append(
                CatalogueEntry(
                    name=row["name"],
                    type=row["type"],
                    ra_deg=float(row["ra_deg"]),
                    dec_deg=float(row["dec_deg"]),
                    major_arcmin=float(row["major_arcmin"] or 0.0),
                    minor_arcmin=float(row["minor_arcmin"] or 0.0),
                    vmag=float(row["vmag"]) if row["vmag"] else None,
                    aliases=tuple(a for a in row["aliases"].split("|") if a),
                )
            )
    return Catalogue(entries)


@dataclass(frozen=True)
class SesameAnswer:
    ra_deg: float
    dec_deg: float
    identifiers: tuple[str, ...]  # %I.0 (the main one) first, then the %I lines
    major_arcmin: float  # from %D; 0.0 when absent


def parse_sesame_text(text: str) -> SesameAnswer | None:
    """The first resolver's position in Sesame's plain-text answer, or None for "Nothing found".

    A found object looks like (one block per resolver that answered):
        # M51\t#Q1234
        #=S=Simbad (via url):    1
        %I.0 M  51
        %J 202.469575 +47.195258 = 13:29:52.69 +47:11:42.9
        %D 13.71 11.67 (O) ...
        %I NGC  5194
    """
    position: tuple[float, float] | None = None
    identifiers: list[str] = []
    major = 0.0
    for line in text.splitlines():
        if line.startswith("#=") and position is not None:
            break  # the next resolver's block: the first one that found the object wins
        fields = line.split()
        if not fields:
            continue
        tag = fields[0]
        if tag == "%J" and position is None and len(fields) >= 3:
            try:
                ra, dec = float(fields[1]), float(fields[2])
            except ValueError:
                continue
            if 0.0 <= ra <= 360.0 and -90.0 <= dec <= 90.0:
                position = (ra % 360.0, dec)
        elif tag in ("%I.0", "%I") and len(fields) > 1:
            identifiers.append(" ".join(fields[1:]).removeprefix("NAME "))
        elif tag == "%D" and not major and len(fields) > 1:
            with contextlib.suppress(ValueError):
                major = max(float(fields[1]), 0.0)
    if position is None:
        return None
    return SesameAnswer(position[0], position[1], tuple(identifiers), major)


class SesameError(Exception):
    """Sesame could not be asked (unreachable, timed out, HTTP error): not the same as "not found"."""


def query_sesame(base_url: str, name: str, timeout_s: float) -> SesameAnswer | None:
    """Ask Sesame once; None when it answers "Nothing found". The whole call, DNS included (which
    urllib's timeout does not cover), is bounded by timeout_s: it runs in a daemon thread that is
    abandoned, to end on its own socket timeout, if it has not answered by then."""
    url = f"{base_url.rstrip('/')}/{SESAME_QUERY}?{urllib.parse.quote(name, safe='')}"
    outcome: list[SesameAnswer | Exception | None] = []

    def ask() -> None:
        try:
            outcome.append(parse_sesame_text(_fetch(url, timeout_s)))
        except Exception as exc:
            outcome.append(exc)

    worker = threading.Thread(target=ask, name="sesame-query", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if not outcome:
        raise SesameError(f"no answer within {timeout_s:g} s")
    if isinstance(outcome[0], SesameError):
        raise outcome[0]
    if isinstance(outcome[0], Exception):  # whatever went wrong asking Sesame, the catalogue still answers
        raise SesameError(repr(outcome[0]))
    return outcome[0]


def _fetch(url: str, timeout_s: float) -> str:
    request = urllib.request.Request(url, headers={"User-Agent": "prettier-space-survey-gateway"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body = response.read(MAX_RESPONSE_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise SesameError(f"HTTP {exc.code}") from None
    except (OSError, ValueError, http.client.HTTPException) as exc:  # refused, timed out, not HTTP, bad URL
        raise SesameError(str(getattr(exc, "reason", exc)) or type(exc).__name__) from None
    if len(body) > MAX_RESPONSE_BYTES:
        raise SesameError(f"answer larger than {MAX_RESPONSE_BYTES} bytes")
    return body.decode("utf-8", "replace")


def _separation_deg(entry: CatalogueEntry, answer: SesameAnswer) -> float:
    ra1, dec1, ra2, dec2 = map(math.radians, (entry.ra_deg, entry.dec_deg, answer.ra_deg, answer.dec_deg))
    cos = math.sin(dec1) * math.sin(dec2) + math.cos(dec1) * math.cos(dec2) * math.cos(ra1 - ra2)
    return math.degrees(math.acos(max(-1.0, min(1.0, cos))))


def check_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InvalidArgument("name", "is empty: give an object name such as 'M 51', or RA/Dec instead")
    if len(name) > MAX_NAME_CHARS:
        raise InvalidArgument("name", f"is {len(name)} characters long; object names have at most {MAX_NAME_CHARS}")
    if _CONTROL_RE.search(name):
        raise InvalidArgument("name", "contains control characters")
    return " ".join(name.split())


class NameResolver:
    """Resolve object names; thread-safe. ``sesame_url`` None, "" or "off": the offline catalogue only."""

    def __init__(
        self,
        sesame_url: str | None,
        timeout_s: float = 3.0,
        *,
        retry_after_s: float = 30.0,
        cache_size: int = 256,
        catalogue: Catalogue | None = None,
    ) -> None:
        url = (sesame_url or "").strip()
        self.sesame_url = None if url.lower() in ("", "off") else url
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s
        self.catalogue = catalogue or load_catalogue()
        self._cache: OrderedDict[str, Resolved] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._sesame_down_until = 0.0

    def resolve(self, name: str) -> Resolved:
        name = check_name(name)
        key = normalise(name)
        if not any(c.isalnum() for c in key):
            raise InvalidArgument("name", f"{name!r} has no letters or digits")
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        resolved = self._resolve_sesame(name) or self._resolve_offline(name)
        if resolved is None:
            where = "Sesame or the offline catalogue" if self.sesame_url else "the offline catalogue (Sesame is off)"
            raise NotFound(
                f"object name {name!r} is not known to {where}; check the spelling "
                "(e.g. 'M 51', 'NGC 5194', 'Whirlpool Galaxy') or give the position as RA/Dec instead"
            )
        with self._lock:
            self._cache[key] = resolved
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return resolved

    def _resolve_sesame(self, name: str) -> Resolved | None:
        if self.sesame_url is None or time.monotonic() < self._sesame_down_until:
            return None
        try:
            answer = query_sesame(self.sesame_url, name, self.timeout_s)
        except SesameError as exc:
            self._sesame_down_until = time.monotonic() + self.retry_after_s
            log.warning(
                "Sesame at %s failed (%s); using the offline catalogue for %.0f s",
                self.sesame_url,
                exc,
                self.retry_after_s,
            )
            return None
        if answer is None:
            return None
        # The catalogue's size for the object Sesame found: by Sesame's identifiers first (the name
        # asked could mean another object to the catalogue), and only if the positions agree.
        entries = (self.catalogue.lookup(n) for n in (*answer.identifiers, name))
        entry = next((e for e in entries if e and _separation_deg(e, answer) < 0.5), None)
        size = entry.major_arcmin if entry and entry.major_arcmin else answer.major_arcmin
        display = answer.identifiers[0] if answer.identifiers else name
        return Resolved(" ".join(display.split()), answer.ra_deg, answer.dec_deg, size, "sesame")

    def _resolve_offline(self, name: str) -> Resolved | None:
        entry = self.catalogue.lookup(name)
        if entry is None:
            return None
        return Resolved(entry.name, entry.ra_deg, entry.dec_deg, entry.major_arcmin, "offline-catalogue")
