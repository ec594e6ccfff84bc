"""``gaiadr3.gaia_source`` as the Gaia TAP replica serves it.

The schema (all 152 columns, with the real datatypes, units, UCDs, utypes and
descriptions) is read from the real Gaia DR3 rows that astroquery ships as test data.
Each star the sky model returns becomes one row: the columns the sky model knows come
from it, the cheap derived ones (designation, l, b, ecliptic coordinates, colours, total
proper motion) are computed the way the archive defines them, and for the real DR3 rows
every other column carries its real value; synthetic stars leave those columns NULL.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import MaskedColumn, Table

TABLE = "gaiadr3.gaia_source"
DR3_SOLUTION_ID = 1636148068921376768  # the solution_id every DR3 gaia_source row carries

# The column that astroquery's cone search adds; not in the table, but described the same way.
_REAL_DATA = ("astroquery.gaia", "tests/data")
_REAL_FILES = ("cone_search.json", "1710099405832VAL-result.vot")

# Columns the sky model gives for every star (Sky.stars()).
SKY_COLUMNS = (
    "source_id", "ra", "dec", "parallax", "pmra", "pmdec",
    "phot_g_mean_mag", "phot_bp_mean_mag", "phot_rp_mean_mag", "ref_epoch",
)  # fmt: skip

# Gaia DR3 documentation: galactic coordinates use the Hipparcos ICRS->galactic matrix A_G,
# ecliptic ones a rotation by the IAU 2006 obliquity of the ecliptic.
_A_G = np.array(
    [
        [-0.0548755604162154, -0.8734370902348850, -0.4838350155487132],
        [+0.4941094278755837, -0.4448296299600112, +0.7469822444972189],
        [-0.8676661490190047, -0.1980763734312015, +0.4559837761750669],
    ]
)
_OBLIQUITY_RAD = np.radians(84381.406 / 3600.0)

DTYPES = {
    "long": np.int64,
    "int": np.int32,
    "short": np.int16,
    "unsignedByte": np.uint8,
    "double": np.float64,
    "float": np.float32,
    "boolean": np.bool_,
    "char": np.str_,
}


@dataclass(frozen=True)
class ColumnMeta:
    """One column of a TAP result, described as the Gaia archive describes it."""

    name: str
    datatype: str  # VOTable datatype: long, double, float, short, boolean, char
    arraysize: str | None = None
    unit: str | None = None
    ucd: str | None = None
    utype: str | None = None
    description: str | None = None
    id: str | None = None  # the VOTable FIELD ID (the archive sets it on source_id and designation)

    @property
    def dtype(self) -> Any:
        return DTYPES[self.datatype]


def _package_dir(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"package {package} is not installed")
    return Path(spec.origin).parent / relative


@cache
def columns() -> tuple[ColumnMeta, ...]:
    """The table's columns in archive order."""
    doc = json.loads((_package_dir(*_REAL_DATA) / _REAL_FILES[0]).read_text())
    ids = {"source_id": "SOURCE_ID", "designation": "DESIGNATION"}
    return tuple(
        ColumnMeta(
            name=m["name"],
            datatype=m["datatype"],
            arraysize=m["arraysize"],
            unit=m["unit"],
            ucd=m["ucd"],
            utype=m["utype"],
            description=m["description"],
            id=ids.get(m["name"]),
        )
        for m in doc["metadata"]
        if m["name"] != "dist"
    )


@cache
def column_index() -> dict[str, ColumnMeta]:
    return {c.name: c for c in columns()}


@cache
def real_rows() -> dict[int, dict[str, Any]]:
    """Every real DR3 row astroquery ships, by source_id, with all its columns."""
    rows: dict[int, dict[str, Any]] = {}
    folder = _package_dir(*_REAL_DATA)
    doc = json.loads((folder / _REAL_FILES[0]).read_text())
    names = [m["name"] for m in doc["metadata"]]
    for values in doc["data"]:
        row = dict(zip(names, values, strict=True))
        rows[int(row["source_id"])] = row
    vot = Table.read(folder / _REAL_FILES[1], format="votable", use_names_over_ids=True)
    for rec in vot:
        row = {name: None if np.ma.is_masked(rec[name]) else np.asarray(rec[name]).item() for name in vot.colnames}
        rows.setdefault(int(row["source_id"]), row)
    return rows


def _unit_vectors(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    ra_r, dec_r = np.radians(ra), np.radians(dec)
    return np.stack([np.cos(dec_r) * np.cos(ra_r), np.cos(dec_r) * np.sin(ra_r), np.sin(dec_r)])


def _lonlat(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lon = np.degrees(np.arctan2(v[1], v[0])) % 360.0
    lat = np.degrees(np.arcsin(np.clip(v[2], -1.0, 1.0)))
    return lon, lat


def derived(ra: np.ndarray, dec: np.ndarray) -> dict[str, np.ndarray]:
    """Galactic and ecliptic coordinates as the archive computes them."""
    v = _unit_vectors(ra, dec)
    l_deg, b_deg = _lonlat(_A_G @ v)
    c, s = np.cos(_OBLIQUITY_RAD), np.sin(_OBLIQUITY_RAD)
    ecl = np.stack([v[0], c * v[1] + s * v[2], -s * v[1] + c * v[2]])
    lon, lat = _lonlat(ecl)
    return {"l": l_deg, "b": b_deg, "ecl_lon": lon, "ecl_lat": lat}


def _float(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


def build(stars: Table) -> Table:
    """The full ``gaia_source`` rows for stars from ``Sky.stars()`` (masked where NULL)."""
    n = len(stars)
    source_id = np.asarray(stars["source_id"], dtype=np.int64)
    ra, dec = _float(stars["ra"]), _float(stars["dec"])
    g, bp, rp = (_float(stars[k]) for k in ("phot_g_mean_mag", "phot_bp_mean_mag", "phot_rp_mean_mag"))
    pmra, pmdec = _float(stars["pmra"]), _float(stars["pmdec"])
    values: dict[str, np.ndarray] = {k: _float(stars[k]) for k in SKY_COLUMNS if k != "source_id"}
    values["source_id"] = source_id
    values["solution_id"] = np.full(n, DR3_SOLUTION_ID, dtype=np.int64)
    values["designation"] = np.array([f"Gaia DR3 {s}" for s in source_id])
    values["pm"] = np.hypot(pmra, pmdec)
    values["bp_rp"], values["bp_g"], values["g_rp"] = bp - rp, bp - g, g - rp
    values.update(derived(ra, dec))

    real = [(i, row) for i, sid in enumerate(source_id) if (row := real_rows().get(int(sid))) is not None]
    table = Table()
    for meta in columns():
        given = values.get(meta.name)
        data: Any
        if meta.datatype == "char":
            data = list(given) if given is not None else [""] * n
            mask = np.full(n, given is None)
        elif given is None:
            data, mask = np.zeros(n, dtype=meta.dtype), np.ones(n, dtype=bool)
        else:
            mask = ~np.isfinite(given) if np.issubdtype(given.dtype, np.floating) else np.zeros(n, dtype=bool)
            data = np.where(mask, 0, given).astype(meta.dtype)
        if meta.name not in SKY_COLUMNS:
            for i, row in real:  # the real value beats a derived one
                if row.get(meta.name) is not None:
                    data[i], mask[i] = row[meta.name], False
        if meta.datatype == "char":
            data = np.array(data, dtype=str)
        table[meta.name] = MaskedColumn(data, mask=mask, unit=meta.unit, description=meta.description)
    return table
