"""Build catalogue.csv, the gateway's offline name catalogue, from OpenNGC.

    pip download --no-deps pyongc==1.2.2 -d /tmp/ongc
    unzip -o /tmp/ongc/pyongc-1.2.2-*.whl 'pyongc/ongc.db' -d /tmp/ongc
    python services/gateway/data/make_catalogue.py --db /tmp/ongc/pyongc/ongc.db

OpenNGC (https://github.com/mattiaverga/OpenNGC, CC BY-SA 4.0) ships as an SQLite file inside the
PyPI package pyongc; this script reads that file with sqlite3 only (pyongc itself is not imported,
and nothing at runtime needs either). Without --db it looks for an installed pyongc.

Kept: every Messier object, every NGC/IC object with V <= 12 (B <= 12.5 when V is unknown), and
every object with a common name (nebulae often have no magnitude; the addendum brings the
Pleiades, the Hyades, the Horsehead...). Duplicates and nonexistent objects are dropped; the
duplicate records' names become aliases of the object they duplicate.

Columns: name (display designation: "M 31", "NGC 7000", "IC 434"), type (OpenNGC's code: G, OCl,
GCl, PN, HII, ...), ra_deg and dec_deg (J2000), major_arcmin and minor_arcmin (empty when
unknown), vmag (V, else B, else empty), aliases ("|"-separated: the other M/NGC/IC designations,
common names and a few catalogue identifiers such as PGC, UGC, ESO, Mel, LBN).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import math
import re
import sqlite3
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "catalogue.csv"
COLUMNS = ("name", "type", "ra_deg", "dec_deg", "major_arcmin", "minor_arcmin", "vmag", "aliases")
# Identifier catalogues worth keeping as aliases (not 2MASX, IRAS, SDSS, stars' catalogues: long and
# never what a person types for these objects).
ID_PREFIXES = ("PGC", "UGC", "UGCA", "ESO", "MCG", "LBN", "Mel", "Cr", "Cl", "PK", "PN", "HCG", "SH", "Arp", "C")
# OpenNGC records M102 as a duplicate of M101; SIMBAD (what Sesame answers) and most modern lists take it
# to be NGC 5866, and so do we, so that the catalogue has all 110 and agrees with Sesame.
MESSIER_OVERRIDES = {"NGC5866": "102"}
DESIGNATION = re.compile(r"^([A-Za-z]+)(\d+)(.*)$")  # OpenNGC names: NGC0224, IC4715, Mel022, ESO056-115


def display(name: str) -> str:
    """OpenNGC's compact name as people write it: NGC0224 -> NGC 224, ESO056-115 -> ESO 56-115."""
    match = DESIGNATION.match(name.strip())
    if not match:
        return name.strip()
    prefix, number, rest = match.groups()
    return f"{prefix} {int(number)}{rest}"


def default_db() -> Path:
    spec = importlib.util.find_spec("pyongc")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pyongc is not installed: pass --db path/to/ongc.db (see this script's docstring)")
    return Path(next(iter(spec.submodule_search_locations))) / "ongc.db"


def build(db: Path) -> list[dict[str, str]]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    con.row_factory = sqlite3.Row
    rows = list(con.execute("SELECT * FROM objects"))
    con.close()

    def messier(row: sqlite3.Row) -> str:
        return MESSIER_OVERRIDES.get(row["name"], row["messier"] or "")

    def wanted(row: sqlite3.Row) -> bool:
        if row["type"] in ("Dup", "NonEx") or row["ra"] is None or row["dec"] is None:
            return False
        bright = row["vmag"] is not None and row["vmag"] <= 12.0
        bright = bright or (row["vmag"] is None and row["bmag"] is not None and row["bmag"] <= 12.5)
        return bool(messier(row)) or bool(row["commonnames"]) or (bright and not row["notngc"])

    kept = {row["name"]: row for row in rows if wanted(row)}
    extra_aliases: dict[str, list[str]] = {name: [] for name in kept}
    # A duplicate record (e.g. NGC 651 = NGC 650) points at the object it repeats via its ngc/ic column.
    for row in rows:
        if row["type"] != "Dup":
            continue
        for prefix, column in (("NGC", "ngc"), ("IC", "ic")):
            for number in filter(None, (row[column] or "").split(",")):
                target = f"{prefix}{number.strip()}"
                if target in extra_aliases:
                    extra_aliases[target].append(display(row["name"]))

    out = []
    for name, row in sorted(kept.items(), key=lambda kv: (kv[1]["ra"], kv[0])):
        designation = display(name)
        m_name = f"M {int(messier(row))}" if messier(row) else ""
        aliases: list[str] = []
        if m_name:
            aliases.append(designation)
        for prefix, column in (("NGC", "ngc"), ("IC", "ic")):
            aliases += [display(f"{prefix}{n.strip()}") for n in (row[column] or "").split(",") if n.strip()]
        aliases += extra_aliases[name]
        aliases += [n.strip() for n in (row["commonnames"] or "").split(",") if n.strip()]
        for identifier in (row["identifiers"] or "").split(","):
            identifier = identifier.strip()
            prefix = re.match(r"[A-Za-z]+", identifier)
            if prefix and prefix.group(0) in ID_PREFIXES:
                aliases.append(identifier)
        primary = m_name or designation
        unique = list(dict.fromkeys(a for a in aliases if a and a != primary and "|" not in a))
        mag = row["vmag"] if row["vmag"] is not None else row["bmag"]
        out.append(
            {
                "name": primary,
                "type": row["type"],
                "ra_deg": f"{math.degrees(row['ra']) % 360.0:.6f}",
                "dec_deg": f"{math.degrees(row['dec']):.6f}",
                "major_arcmin": "" if row["majax"] is None else f"{row['majax']:g}",
                "minor_arcmin": "" if row["minax"] is None else f"{row['minax']:g}",
                "vmag": "" if mag is None else f"{mag:g}",
                "aliases": "|".join(unique),
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", type=Path, help="OpenNGC's SQLite file (pyongc/ongc.db)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    rows = build(args.db or default_db())
    messier = sum(1 for r in rows if r["name"].startswith("M "))
    if messier != 110:
        raise SystemExit(f"expected the 110 Messier objects, found {messier}")
    with args.out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    print(f"{args.out}: {len(rows)} objects, {messier} Messier", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
