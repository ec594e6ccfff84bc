"""A stand-in for CDS Sesame (https://cds.unistra.fr/cgi-bin/nph-sesame), the name resolver
in front of SIMBAD, NED and VizieR.

Requests are the real service's: ``GET /cgi-bin/nph-sesame[/-o<opts>][/<databases>]?<name>``,
the name being the whole query string (URL-encoded; "+" reads as a space). Options: ``-oI``
adds every identifier (``%I`` lines), ``-ox``/``-oxp`` answer XML instead of text; databases
are letters from S, N, V and A (all), optionally after "~", e.g. ``/-oI/SNV``, ``/~S`` or
astropy's ``/SNV``.

What comes back, as from the real service: HTTP 200 in every case, text/plain
    # M51\t#Q1234
    #=S=Simbad (via url):    1
    %@ 1575544
    %I.0 M  51
    %C.0 G
    %J 202.469625 +47.195167 = 13:29:52.71 +47:11:42.6
    %D 13.71 11.67 (O)
    %I NGC  5194            (with -oI)

    #====Done (2026-Nov-22,10:00:00z)====
and for an unknown name ``#! *** Nothing found ***`` in place of the resolver block; in XML
a ``<Resolver>`` with ``jradeg``/``jdedeg``/``oname``/``alias``, or ``<INFO>*** Nothing found
***</INFO>`` in the ``<Target>``.

What it knows: the gateway's offline catalogue (OpenNGC: Messier and bright NGC/IC objects, by
every alias) plus a few real objects the catalogue does not have (stars, a quasar, deep fields,
galaxy clusters; real J2000 positions), so that a client can tell the two sources apart.
``forget`` makes it not know some names (real Sesame lacks some of OpenNGC's common names).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, replace
from xml.sax.saxutils import escape

from services.gateway.names import CatalogueEntry, load_catalogue, normalise
from services.universe.replicas.httpbase import ReplicaServer, Request, Response

PATH = "/cgi-bin/nph-sesame"
REAL_URL = "https://cds.unistra.fr/cgi-bin/nph-sesame"

# OpenNGC type code -> SIMBAD object type (the %C line).
OTYPES = {
    "G": "G",
    "GPair": "PaG",
    "GTrpl": "GrG",
    "GGroup": "GrG",
    "OCl": "OpC",
    "GCl": "GlC",
    "Cl+N": "Cl*",
    "*Ass": "As*",
    "PN": "PN",
    "HII": "HII",
    "EmN": "EmO",
    "RfN": "RNe",
    "DrkN": "DNe",
    "Neb": "ISM",
    "SNR": "SNR",
    "*": "*",
    "**": "**",
    "Nova": "No*",
}


@dataclass(frozen=True)
class SesameObject:
    name: str  # the main identifier, SIMBAD style
    otype: str
    ra_deg: float
    dec_deg: float
    aliases: tuple[str, ...] = ()
    major_arcmin: float = 0.0
    minor_arcmin: float = 0.0


# Real objects that are not in the offline catalogue (J2000 positions from SIMBAD). The Hubble
# Ultra Deep Field is also where the local universe has its real XDF image (universe.realdata).
EXTRA_OBJECTS = (
    SesameObject(
        "NAME Hubble Ultra Deep Field", "Fld", 53.1625, -27.791389, ("HUDF", "XDF", "Hubble eXtreme Deep Field")
    ),
    SesameObject("* alf Lyr", "*", 279.234735, 38.783689, ("Vega", "HD 172167", "HR 7001")),
    SesameObject("* alf CMa", "SB*", 101.287155, -16.716116, ("Sirius", "HD 48915", "HR 2491")),
    SesameObject("* alf Ori", "s*r", 88.792939, 7.407064, ("Betelgeuse", "HD 39801", "HR 2061")),
    SesameObject("* alf UMi", "cC*", 37.954561, 89.264109, ("Polaris", "HD 8890", "HR 424")),
    SesameObject("NAME Proxima Centauri", "BY*", 217.428953, -62.679484, ("Proxima", "V* V645 Cen", "GJ 551")),
    SesameObject("NAME Sgr A*", "X", 266.416837, -29.007810, ("Sagittarius A*",)),
    SesameObject("3C 273", "QSO", 187.277915, 2.052388, ("QSO B1226+023", "PG 1226+023")),
    SesameObject("ACO 1689", "ClG", 197.872917, -1.338056, ("Abell 1689",)),
    SesameObject("NAME Bullet Cluster", "ClG", 104.657917, -55.95, ("1E 0657-56", "1E 0657-558")),
    SesameObject("NAME Cartwheel Galaxy", "IG", 9.42125, -33.716389, ("ESO 350-40", "PGC 2248")),
    SesameObject("NAME Hoag's Object", "G", 229.31, 21.585556, ("PGC 54559",)),
)


def _from_catalogue(entry: CatalogueEntry) -> SesameObject:
    designation, *rest = entry.names
    if designation.startswith("M "):  # SIMBAD writes "M  51"
        designation = "M  " + designation[2:]
    return SesameObject(
        designation,
        OTYPES.get(entry.type, "?"),
        entry.ra_deg,
        entry.dec_deg,
        tuple(rest),
        entry.major_arcmin,
        entry.minor_arcmin,
    )


def sexagesimal(ra_deg: float, dec_deg: float) -> str:
    total = round(ra_deg / 15.0 * 360000) % (24 * 360000)  # hundredths of a second of time
    h, rem = divmod(total, 360000)
    m, cs = divmod(rem, 6000)
    sign = "-" if dec_deg < 0 else "+"
    dtotal = round(abs(dec_deg) * 36000)  # tenths of an arcsecond
    d, drem = divmod(dtotal, 36000)
    dm, ds = divmod(drem, 600)
    return f"{h:02d}:{m:02d}:{cs / 100:05.2f} {sign}{d:02d}:{dm:02d}:{ds / 10:04.1f}"


class SesameReplica(ReplicaServer):
    def __init__(self, host: str = "127.0.0.1", port: int = 0, forget: Iterable[str] = ()) -> None:
        super().__init__("sesame", host, port)
        self._forgotten = {normalise(n) for n in forget}
        self._objects: dict[str, SesameObject] = {}
        for obj in (*EXTRA_OBJECTS, *(_from_catalogue(e) for e in load_catalogue().entries)):
            for name in (obj.name, *obj.aliases):
                self._objects.setdefault(normalise(name.removeprefix("NAME ").removeprefix("* ")), obj)
        self._queries = 0
        self.route("GET", PATH + r"(?P<opts>/[^?]*)?", self._resolve)

    def lookup(self, name: str) -> SesameObject | None:
        key = normalise(name)
        obj = None if key in self._forgotten else self._objects.get(key)
        if obj is None or not self._forgotten:
            return obj
        return replace(obj, aliases=tuple(a for a in obj.aliases if normalise(a) not in self._forgotten))

    def _resolve(self, request: Request) -> Response:
        parts = [p for p in (request.match.get("opts") or "").split("/") if p]
        options = "".join(p[2:] for p in parts if p.startswith("-o"))
        databases = next((p.lstrip("~") for p in parts if not p.startswith("-")), "SNV") or "SNV"
        name = _query_name(request.query)
        self._queries += 1
        obj = self.lookup(name) if name.strip() else None
        if "x" in options:
            return Response(200, _xml(name, databases, obj).encode(), content_type="text/xml")
        return Response(200, _text(name, obj, "I" in options, self._queries).encode(), content_type="text/plain")


def _query_name(query: dict[str, list[str]]) -> str:
    """The name is the raw query string; the shared server parsed it as key=value pairs."""
    parts = [key if values == [""] else "&".join(f"{key}={v}" for v in values) for key, values in query.items()]
    return " ".join("&".join(parts).split())


def _done() -> str:
    return time.strftime("#====Done (%Y-%b-%d,%H:%M:%Sz)====", time.gmtime())


def _oid(obj: SesameObject) -> int:
    return zlib.crc32(obj.name.encode()) % 9_000_000 + 1_000_000


def _text(name: str, obj: SesameObject | None, all_ids: bool, query_no: int) -> str:
    lines = [f"# {name}\t#Q{20_000_000 + query_no}"]
    if obj is None:
        lines.append("#! *** Nothing found *** ")
    else:
        lines += [
            "#=S=Simbad (via url):    1",
            f"%@ {_oid(obj)}",
            f"%I.0 {obj.name}",
            f"%C.0 {obj.otype}",
            f"%J {obj.ra_deg:.6f} {obj.dec_deg:+.6f} = {sexagesimal(obj.ra_deg, obj.dec_deg)}",
        ]
        if obj.major_arcmin:
            lines.append(f"%D {obj.major_arcmin:g} {obj.minor_arcmin or obj.major_arcmin:g} (O)")
        if all_ids:
            lines += [f"%I {alias}" for alias in obj.aliases]
        lines.append(f"%#B {40 + len(obj.aliases)}")
    return "\n".join([*lines, "", _done(), ""])


def _xml(name: str, databases: str, obj: SesameObject | None) -> str:
    head = '<?xml version="1.0" encoding="UTF-8"?>\n<Sesame xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
    head += ' xsi:noNamespaceSchemaLocation="http://vizier.u-strasbg.fr/xml/sesame_4x.xsd">\n'
    body = f'<Target option="{escape(databases)}">\n  <name>{escape(name)}</name>\n'
    if obj is None:
        body += "  <INFO>*** Nothing found *** </INFO>\n"
    else:
        body += '  <Resolver name="S=Simbad (via url)">\n'
        body += f"    <oid>{_oid(obj)}</oid>\n    <otype>{escape(obj.otype)}</otype>\n"
        body += f"    <jpos>{sexagesimal(obj.ra_deg, obj.dec_deg)}</jpos>\n"
        body += f"    <jradeg>{obj.ra_deg:.6f}</jradeg>\n    <jdedeg>{obj.dec_deg:.6f}</jdedeg>\n"
        body += f"    <oname>{escape(obj.name)}</oname>\n"
        body += "".join(f"    <alias>{escape(a)}</alias>\n" for a in obj.aliases)
        body += "  </Resolver>\n"
    return head + body + "</Target>\n</Sesame>\n<!-- " + _done()[1:] + " -->\n"
