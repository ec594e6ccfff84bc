"""Runs parsed ADQL (see ``adql.py``) against the sky model's stars.

The sky is generated on demand around the positions asked for, so every query needs a
positional constraint on (ra, dec): ``1=CONTAINS(POINT(ra, dec), CIRCLE(...)|BOX(...))``
or ``DISTANCE(POINT(ra, dec), POINT(...)) < r``. The stars in the bounding cone come from
``Sky.stars()``; every other predicate, the select list, ORDER BY and TOP are evaluated
here with SQL semantics (a NULL never satisfies a comparison; NULLs sort last ascending).
``BOX`` is a range in RA and in Dec, as pgSphere's ``sbox`` (the archive's database) has it.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import astropy.units as u
import numpy as np
from astropy.table import MaskedColumn, Table, vstack
from astropy_healpix import HEALPix

from services.universe.replicas import adql, gaia_source
from services.universe.replicas.gaia_formats import QueryResult
from services.universe.replicas.gaia_source import ColumnMeta

_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_FLIPPED = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "=": "=", "!=": "!="}


class StarSource(Protocol):
    def stars(self, ra_deg: float, dec_deg: float, radius_deg: float) -> Table: ...


@dataclass(frozen=True)
class Cone:
    ra: float
    dec: float
    radius: float


def separation_deg(ra1: Any, dec1: Any, ra2: Any, dec2: Any) -> np.ndarray:
    """Great-circle distance (Vincenty formula: exact at every scale)."""
    ra1, dec1, ra2, dec2 = (np.radians(np.asarray(v, dtype=np.float64)) for v in (ra1, dec1, ra2, dec2))
    d_ra = ra2 - ra1
    num = np.hypot(
        np.cos(dec2) * np.sin(d_ra), np.cos(dec1) * np.sin(dec2) - np.sin(dec1) * np.cos(dec2) * np.cos(d_ra)
    )
    den = np.sin(dec1) * np.sin(dec2) + np.cos(dec1) * np.cos(dec2) * np.cos(d_ra)
    return np.degrees(np.arctan2(num, den))


class GaiaQueryEngine:
    """Answers ADQL on ``gaiadr3.gaia_source`` from a sky model."""

    def __init__(self, sky: StarSource, max_radius_deg: float = 2.0) -> None:
        self.sky = sky
        self.max_radius_deg = max_radius_deg

    def run(self, text: str, job_id: str, maxrec: int | None = None) -> QueryResult:
        query = adql.parse(text)
        _check_table(query)
        _Resolver(query).check()
        stars = [self.sky.stars(c.ra, c.dec, c.radius) for c in self._positional(query)]
        table = gaia_source.build(_distinct(stars))
        keep = np.ones(len(table), dtype=bool)
        for predicate in query.where:
            keep &= _Evaluator(query, table).predicate(predicate)
        table = table[keep]
        columns, values = _Evaluator(query, table).select()
        order = _Evaluator(query, table).order(columns, values)
        limit = query.top
        overflow = False
        if maxrec is not None and (limit is None or maxrec < limit) and len(order) > maxrec:
            limit, overflow = maxrec, True
        if limit is not None:
            order = order[:limit]
        out = Table()
        for meta, (data, mask) in zip(columns, values, strict=True):
            out[meta.name] = MaskedColumn(data[order], mask=mask[order])
        return QueryResult(columns, out, text, job_id, overflow=overflow)

    def _positional(self, query: adql.Query) -> list[Cone]:
        """Cones that bound the rows the query can return: the smallest positional constraint,
        or, for a query by source_id, the HEALPix cells its ids encode."""
        cones: list[Cone] = []
        for p in query.where:
            if isinstance(p, adql.Comparison):
                region = _contains_constraint(p)
                cone = _bounding_cone(region) if region is not None else _distance_constraint(p)
                if cone is not None:
                    cones.append(cone)
        if cones:
            cone = min(cones, key=lambda c: c.radius)
            if cone.radius > self.max_radius_deg:
                raise adql.AdqlUnsupported(f"regions larger than {self.max_radius_deg:g} degrees in radius")
            return [cone]
        ids = _source_ids(query)
        if ids:
            return [_source_id_cone(i) for i in ids]
        raise adql.AdqlUnsupported(
            "queries without a positional constraint: the replica generates its stars around the positions "
            "asked for, so add WHERE 1=CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', ra0, dec0, radius)) "
            "(or select by source_id)"
        )


MAX_IDS = 200  # source_id lookups without a position, each one a tiny cone


def _source_ids(query: adql.Query) -> list[int]:
    for p in query.where:
        if isinstance(p, adql.Comparison) and p.op == "=":
            for a, b in ((p.left, p.right), (p.right, p.left)):
                if isinstance(a, adql.ColumnRef) and a.name == "source_id" and isinstance(b, int):
                    return [b]
        if (
            isinstance(p, adql.InList)
            and not p.negated
            and isinstance(p.operand, adql.ColumnRef)
            and p.operand.name == "source_id"
            and all(isinstance(v, int) for v in p.values)
        ):
            if len(p.values) > MAX_IDS:
                raise adql.AdqlUnsupported(f"more than {MAX_IDS} source_ids without a positional constraint")
            return [int(v) for v in p.values]
    return []


_HEALPIX12 = HEALPix(nside=4096, order="nested")


def _source_id_cone(source_id: int) -> Cone:
    """A Gaia source_id holds its level-12 nested HEALPix cell (source_id // 2**35)."""
    cell = source_id >> 35
    if not 0 <= cell < _HEALPIX12.npix:
        return Cone(0.0, 0.0, 0.0)
    lon, lat = _HEALPIX12.healpix_to_lonlat(cell)
    return Cone(float(lon.to_value(u.deg)), float(lat.to_value(u.deg)), 0.02)  # cells are ~0.86' across


def _distinct(tables: list[Table]) -> Table:
    if len(tables) == 1:
        return tables[0]
    table = vstack(tables, metadata_conflicts="silent")
    _, first = np.unique(np.asarray(table["source_id"]), return_index=True)
    return table[np.sort(first)]


def _check_table(query: adql.Query) -> None:
    full = f"{query.schema}.{query.table}" if query.schema else query.table
    if full == gaia_source.TABLE:
        return
    if query.table == "gaia_source" and (query.schema or "").startswith("gaia"):
        raise adql.AdqlUnsupported(f"the table {full}: this replica serves {gaia_source.TABLE} only")
    raise adql.AdqlSyntaxError(f'Unknown table "{full}" {query.table_span} !')


def _is_ra_dec(point: adql.Point) -> bool:
    return (
        isinstance(point.lon, adql.ColumnRef)
        and isinstance(point.lat, adql.ColumnRef)
        and (point.lon.name, point.lat.name) == ("ra", "dec")
    )


def _contains_constraint(p: adql.Comparison) -> adql.Circle | adql.Box | None:
    for a, b in ((p.left, p.right), (p.right, p.left)):
        if isinstance(a, adql.Contains):
            if p.op != "=" or b not in (1, 1.0):
                raise adql.AdqlUnsupported("CONTAINS other than 1=CONTAINS(...)")
            if not _is_ra_dec(a.point):
                raise adql.AdqlUnsupported("CONTAINS on a point other than POINT(ra, dec)")
            return a.region
    return None


def _distance_constraint(p: adql.Comparison) -> Cone | None:
    left, op, right = p.left, p.op, p.right
    if isinstance(right, adql.Distance):
        left, op, right = right, _FLIPPED[op], left
    if not isinstance(left, adql.Distance) or op not in ("<", "<=") or not isinstance(right, (int, float)):
        return None
    for here, there in ((left.a, left.b), (left.b, left.a)):
        if _is_ra_dec(here) and isinstance(there.lon, float) and isinstance(there.lat, float):
            return Cone(there.lon, there.lat, float(right))
    return None


def _bounding_cone(region: adql.Circle | adql.Box) -> Cone:
    if isinstance(region, adql.Circle):
        return Cone(region.ra, region.dec, region.radius)
    half_w, half_h = region.width / 2.0, region.height / 2.0
    corners_ra = region.ra + np.array([-half_w, half_w, -half_w, half_w])
    corners_dec = np.clip(region.dec + np.array([-half_h, -half_h, half_h, half_h]), -90.0, 90.0)
    radius = float(separation_deg(region.ra, region.dec, corners_ra, corners_dec).max())
    if abs(region.dec) + half_h >= 90.0:  # the box reaches a pole: its corners no longer bound it
        radius = max(radius, 90.0 - abs(region.dec) + 1e-9)
    return Cone(region.ra, region.dec, radius)


def _inside(region: adql.Circle | adql.Box, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    if isinstance(region, adql.Circle):
        return separation_deg(ra, dec, region.ra, region.dec) <= region.radius
    d_ra = (ra - region.ra + 180.0) % 360.0 - 180.0
    return (np.abs(d_ra) <= region.width / 2.0) & (np.abs(dec - region.dec) <= region.height / 2.0)


class _Resolver:
    """Checks every column reference, and reports all unresolved ones at once as the archive does."""

    def __init__(self, query: adql.Query) -> None:
        self.query = query
        self.aliases = {item.alias for item in query.items if item.alias}
        self.missing: list[adql.ColumnRef] = []

    def check(self) -> None:
        q = self.query
        for item in q.items:
            if isinstance(item.expr, adql.Star):
                if item.expr.qualifier not in _qualifiers(q):
                    raise adql.AdqlSyntaxError(f'Unknown table "{item.expr.qualifier}" !')
            else:
                self.expr(item.expr)
        for p in q.where:
            for operand in _operands(p):
                self.expr(operand)
        for o in q.order:
            if isinstance(o.expr, int):
                if not 1 <= o.expr <= len(q.items):
                    raise adql.AdqlSyntaxError(f"ORDER BY position {o.expr} is not in the select list")
            elif isinstance(o.expr, adql.ColumnRef) and o.expr.qualifier is None and o.expr.name in self.aliases:
                continue
            else:
                self.expr(o.expr)
        if self.missing:
            listed = ", ".join(f"{c.name} {c.span}" for c in self.missing)
            raise adql.AdqlSyntaxError(f"{len(self.missing)} unresolved identifiers: {listed} !")

    def expr(self, expr: Any) -> None:
        if isinstance(expr, adql.ColumnRef):
            known = expr.name in gaia_source.column_index()
            if not known or expr.qualifier not in _qualifiers(self.query):
                self.missing.append(expr)
        elif isinstance(expr, adql.Distance):
            for point in (expr.a, expr.b):
                self.expr(point.lon)
                self.expr(point.lat)
        elif isinstance(expr, adql.Contains):
            self.expr(expr.point.lon)
            self.expr(expr.point.lat)


def _qualifiers(query: adql.Query) -> set[str | None]:
    """What may stand before a column name: nothing, the alias, the table or schema.table
    (once the table has an alias, only the alias, as in SQL)."""
    if query.alias:
        return {None, query.alias}
    return {None, query.table, f"{query.schema}.{query.table}" if query.schema else query.table}


def _operands(p: adql.Predicate) -> list[Any]:
    if isinstance(p, adql.Comparison):
        return [p.left, p.right]
    if isinstance(p, adql.Between):
        return [p.operand, p.low, p.high]
    if isinstance(p, adql.InList):
        return [p.operand]
    return [p.column]


Values = tuple[np.ndarray, np.ndarray]  # (data, null mask)


class _Evaluator:
    def __init__(self, query: adql.Query, table: Table) -> None:
        self.query = query
        self.table = table
        self.n = len(table)

    def column(self, name: str) -> Values:
        col = self.table[name]
        mask = np.asarray(col.mask) if isinstance(col, MaskedColumn) else np.zeros(self.n, dtype=bool)
        return np.asarray(col), mask.copy()

    def value(self, expr: Any) -> Values:
        if isinstance(expr, adql.ColumnRef):
            return self.column(expr.name)
        if isinstance(expr, adql.Distance):
            (ra1, m1), (dec1, m2), (ra2, m3), (dec2, m4) = (
                self.value(v) for v in (expr.a.lon, expr.a.lat, expr.b.lon, expr.b.lat)
            )
            return separation_deg(ra1, dec1, ra2, dec2), m1 | m2 | m3 | m4
        if isinstance(expr, adql.Contains):
            (ra, m1), (dec, m2) = self.value(expr.point.lon), self.value(expr.point.lat)
            return _inside(expr.region, ra.astype(float), dec.astype(float)).astype(np.int64), m1 | m2
        return np.full(self.n, expr, dtype=object if isinstance(expr, str) else None), np.zeros(self.n, dtype=bool)

    def predicate(self, p: adql.Predicate) -> np.ndarray:
        if isinstance(p, adql.IsNull):
            _, mask = self.column(p.column.name)
            return ~mask if p.negated else mask
        if isinstance(p, adql.Comparison):
            (a, ma), (b, mb) = self.value(p.left), self.value(p.right)
            return self._compare(a, p.op, b) & ~(ma | mb)
        if isinstance(p, adql.Between):
            (v, mv), (lo, ml), (hi, mh) = (self.value(x) for x in (p.operand, p.low, p.high))
            inside = self._compare(v, ">=", lo) & self._compare(v, "<=", hi)
            return (~inside if p.negated else inside) & ~(mv | ml | mh)
        v, mv = self.value(p.operand)
        hit = np.zeros(self.n, dtype=bool)
        for literal in p.values:
            hit |= self._compare(v, "=", np.full(self.n, literal, dtype=object if isinstance(literal, str) else None))
        return (~hit if p.negated else hit) & ~mv

    @staticmethod
    def _compare(a: np.ndarray, op: str, b: np.ndarray) -> np.ndarray:
        if (a.dtype.kind in "US" or a.dtype == object) != (b.dtype.kind in "US" or b.dtype == object):
            raise adql.AdqlSyntaxError("cannot compare a string with a number")
        return np.asarray(_OPS[op](a.astype(object) if a.dtype == object else a, b), dtype=bool)

    def select(self) -> tuple[list[ColumnMeta], list[Values]]:
        columns: list[ColumnMeta] = []
        values: list[Values] = []
        index = gaia_source.column_index()
        for item in self.query.items:
            if isinstance(item.expr, adql.Star):
                for meta in gaia_source.columns():
                    columns.append(meta)
                    values.append(self.column(meta.name))
            elif isinstance(item.expr, adql.ColumnRef):
                meta = index[item.expr.name]
                columns.append(_renamed(meta, item.alias) if item.alias else meta)
                values.append(self.column(meta.name))
            else:
                columns.append(ColumnMeta(name=item.alias or "distance", datatype="double"))
                values.append(self.value(item.expr))
        return _unique(columns), values

    def order(self, columns: list[ColumnMeta], values: list[Values]) -> np.ndarray:
        """Row order: the ORDER BY keys, then the sky model's own order (stable)."""
        keys: list[np.ndarray] = [np.arange(self.n)]
        by_alias = {item.alias: i for i, item in enumerate(self.query.items) if item.alias}
        for o in reversed(self.query.order):
            if isinstance(o.expr, int):
                data, mask = values[o.expr - 1]
            elif isinstance(o.expr, adql.ColumnRef) and o.expr.qualifier is None and o.expr.name in by_alias:
                data, mask = values[_position(self.query, by_alias[o.expr.name])]
            else:
                data, mask = self.value(o.expr)
            rank = np.unique(data, return_inverse=True)[1].reshape(-1) if self.n else np.zeros(0, dtype=np.int64)
            keys.append(-rank if o.descending else rank)
            keys.append(~mask if o.descending else mask)  # NULLS LAST ascending, FIRST descending
        return np.lexsort(keys)


def _position(query: adql.Query, item_index: int) -> int:
    """Index in the expanded column list of the select item at item_index."""
    width = len(gaia_source.columns())
    return sum(width if isinstance(it.expr, adql.Star) else 1 for it in query.items[:item_index])


def _renamed(meta: ColumnMeta, name: str) -> ColumnMeta:
    return ColumnMeta(name, meta.datatype, meta.arraysize, meta.unit, meta.ucd, meta.utype, meta.description, None)


def _unique(columns: list[ColumnMeta]) -> list[ColumnMeta]:
    """Result column names must be unique (the same column twice, ``*`` with ``ra``)."""
    seen: dict[str, int] = {}
    out = []
    for meta in columns:
        count = seen.get(meta.name, 0)
        seen[meta.name] = count + 1
        out.append(meta if count == 0 else _renamed(meta, f"{meta.name}_{count + 1}"))
    return out
