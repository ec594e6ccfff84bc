"""Leak-free train/validation/test splits by sky region, and the tile index for training crops.

Splits. Every field (an outreach image's footprint on the sky) is mapped to the HEALPix cells
(nested, ICRS) it touches, *all* of them: a field straddling a cell border carries every cell it
touches. Fields that share a cell, directly or through a chain of other fields, form one
connected component, and a whole component goes to one split, so no cell, hence no sky region,
is ever in two splits. A component's split comes from a hash of (seed, order, smallest cell id
of the component) compared with the requested fractions: the result does not depend on the
order of the input, and a component keeps its split when unrelated fields are added to a later
dataset version (it only moves if it merges with another component, or if the order changes:
the automatic order follows the largest field radius, so pin `order` across versions). The
fractions are met in expectation over components; the achieved ones (by field count) are in
`Splits.report`.

Cells touched by a cone are found exactly (up to a small, conservative margin): a breadth-first
walk over cell neighbours from the centre's cell, keeping each cell whose boundary comes within
the radius of the centre. astropy_healpix's `cone_search_lonlat` is not used for this because it
misses partially covered cells (measured: ~3% of random cones miss one touched cell), and one
missed cell is a leak. A polygon footprint is replaced by its bounding cap (centre = mean of the
corner vectors), a superset that is exact enough for fields that are small against the cells.

Tile index. Crop positions (x0, y0) on a regular grid in FITS orientation: the array is indexed
`image[y, x]` with row 0 the *bottom* row (as astropy.io.fits loads it). A mask made from a
top-down image (PNG, JPEG) must be flipped (`mask[::-1]`) before it is passed here.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field

import astropy.units as u
import numpy as np
from astropy_healpix import boundaries_lonlat, lonlat_to_healpix, neighbours, nside_to_pixel_resolution

MAX_ORDER = 29  # astropy_healpix's limit (nside = 2**29)
AUTO_MAX_ORDER = 10  # finest order chosen automatically: ~3.4 arcmin cells, for point-like fields
CELL_TO_RADIUS = 4.0  # automatic order: cell size >= this x the largest field radius ...
CELL_TO_RADIUS_RELAXED = 2.0  # ... or, if that leaves one dominant component, >= this x
MAX_COMPONENT_SHARE = 0.5  # "dominant": a component holding more than this share of the fields
BOUNDARY_STEPS = 64  # boundary samples per cell edge in the touch test (margin ~1% of a cell)
SPLITS = ("train", "validation", "test")


# --------------------------------------------------------------------------- geometry helpers


def _check_order(order: int) -> int:
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)):
        raise ValueError(f"HEALPix order must be an integer in [0, {MAX_ORDER}], got {order!r}")
    if not 0 <= order <= MAX_ORDER:
        raise ValueError(f"HEALPix order must be in [0, {MAX_ORDER}], got {order}")
    return int(order)


def _check_radec(ra_deg: float, dec_deg: float) -> None:
    if not (math.isfinite(ra_deg) and math.isfinite(dec_deg)):
        raise ValueError(f"RA and Dec must be finite numbers of degrees, got ({ra_deg}, {dec_deg})")
    if not -90.0 <= dec_deg <= 90.0:
        raise ValueError(f"Dec must be in [-90, 90] degrees, got {dec_deg}")


def _check_radius(radius_deg: float) -> None:
    if not (math.isfinite(radius_deg) and 0.0 <= radius_deg < 90.0):
        raise ValueError(f"field radius must be in [0, 90) degrees, got {radius_deg}")


def _unit_vectors(ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
    ra, dec = np.radians(ra_deg), np.radians(dec_deg)
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)


def _angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle between unit vectors (last axis), accurate at small and large angles."""
    cross = np.linalg.norm(np.cross(a, b), axis=-1)
    dot = np.sum(a * b, axis=-1)
    return np.degrees(np.arctan2(cross, dot))


def cell_of(ra_deg: float, dec_deg: float, order: int) -> int:
    """The nested HEALPix cell (ICRS, order `order`, nside = 2**order) that contains (ra, dec)."""
    order = _check_order(order)
    ra_deg, dec_deg = float(ra_deg), float(dec_deg)
    _check_radec(ra_deg, dec_deg)
    return int(lonlat_to_healpix(ra_deg * u.deg, dec_deg * u.deg, 2**order, order="nested"))


def _cells_of_cone(ra_deg: float, dec_deg: float, radius_deg: float, order: int) -> set[int]:
    """Every cell whose area comes within radius_deg of the centre (conservative by ~1% of a cell)."""
    nside = 2**order
    centre = _unit_vectors(np.array(ra_deg), np.array(dec_deg))
    start = cell_of(ra_deg, dec_deg, order)
    found = {start}
    frontier = np.array([start], dtype=np.int64)
    seen = {start}
    while frontier.size:
        with np.errstate(invalid="ignore"):  # cells with 7 neighbours report -1 for the 8th
            cand = neighbours(frontier, nside, order="nested").ravel()
        cand = np.unique(cand[cand >= 0])
        cand = np.array([c for c in cand.tolist() if c not in seen], dtype=np.int64)
        if not cand.size:
            break
        seen.update(cand.tolist())
        lon, lat = boundaries_lonlat(cand, BOUNDARY_STEPS, nside, order="nested")
        pts = _unit_vectors(lon.to_value(u.deg), lat.to_value(u.deg))  # (n, 4*steps, 3)
        dist = _angle_deg(pts, centre)
        # The true boundary between two samples is within half their spacing of one of them.
        spacing = _angle_deg(pts, np.roll(pts, -1, axis=1)).max(axis=1)
        touched = dist.min(axis=1) <= radius_deg + 0.6 * spacing
        frontier = cand[touched]
        found.update(frontier.tolist())
    return found


def _bounding_cap(corners: np.ndarray) -> tuple[float, float, float]:
    vec = _unit_vectors(corners[:, 0], corners[:, 1])
    mean = vec.sum(axis=0)
    norm = np.linalg.norm(mean)
    if norm < 1e-12:
        raise ValueError("footprint corners surround the whole sky; expected a field smaller than a hemisphere")
    mean /= norm
    radius = float(_angle_deg(vec, mean).max())
    if radius >= 90.0:
        raise ValueError(f"footprint spans {radius:.1f} deg from its centre; expected a field under a hemisphere")
    ra = math.degrees(math.atan2(mean[1], mean[0])) % 360.0
    dec = math.degrees(math.asin(max(-1.0, min(1.0, mean[2]))))
    return ra, dec, radius


def cells_of_footprint(footprint: Sequence[float] | Sequence[Sequence[float]], order: int) -> set[int]:
    """Every nested HEALPix cell at `order` that a field touches.

    `footprint` is either a cone `(ra_deg, dec_deg, radius_deg)` or a sequence of >= 3 corners
    `[(ra_deg, dec_deg), ...]` (e.g. `wcs.calc_footprint()`); corners are replaced by their
    bounding cap, which can only add cells. The result may include a cell that comes within
    about a hundredth of a cell of the field without touching it, never misses one it touches.
    """
    order = _check_order(order)
    arr = np.asarray(footprint, dtype=float)
    if arr.ndim == 1 and arr.shape == (3,):
        ra, dec, radius = (float(v) for v in arr)
        _check_radec(ra, dec)
        _check_radius(radius)
    elif arr.ndim == 2 and arr.shape[1] == 2 and arr.shape[0] >= 3:
        for ra, dec in arr:
            _check_radec(float(ra), float(dec))
        ra, dec, radius = _bounding_cap(arr)
    else:
        raise ValueError(
            "footprint must be a cone (ra_deg, dec_deg, radius_deg) or >= 3 corners [(ra_deg, dec_deg), ...], "
            f"got an array of shape {arr.shape}"
        )
    return _cells_of_cone(ra, dec, radius, order)


# --------------------------------------------------------------------------- splits


@dataclass(frozen=True)
class Field:
    """A field on the sky: centre (ICRS degrees) and the radius of a cap that covers it."""

    id: Hashable
    ra: float
    dec: float
    radius_deg: float

    def __post_init__(self) -> None:
        try:
            _check_radec(float(self.ra), float(self.dec))
            _check_radius(float(self.radius_deg))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"field {self.id!r}: {exc}") from None


@dataclass(frozen=True)
class SplitReport:
    order: int
    order_chosen_automatically: bool
    cell_size_deg: float
    n_fields: int
    n_components: int
    largest_component_fields: int
    requested: dict[str, float]
    achieved: dict[str, float]  # share of fields per split
    counts: dict[str, int] = field(default_factory=dict)  # fields per split


class Splits(dict):
    """`{field_id: "train" | "validation" | "test"}`, with `.report` (a SplitReport)."""

    report: SplitReport

    def __init__(self, mapping: dict, report: SplitReport) -> None:
        super().__init__(mapping)
        self.report = report


def _check_fraction(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and 0.0 <= value < 1.0):
        raise ValueError(f"{name} must be in [0, 1), got {value}")
    return value


def _components(cells: list[set[int]]) -> list[list[int]]:
    """Connected components of fields linked by shared cells; lists of field indices."""
    parent = list(range(len(cells)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[int, int] = {}
    for i, cs in enumerate(cells):
        for c in cs:
            j = owner.setdefault(c, i)
            ri, rj = find(i), find(j)
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)
    groups: dict[int, list[int]] = {}
    for i in range(len(cells)):
        groups.setdefault(find(i), []).append(i)
    return list(groups.values())


def _seed_key(seed: int | str) -> str:
    """Canonical text of a seed, so that 7 and np.int64(7) give the same splits."""
    if isinstance(seed, str):
        return f"s:{seed}"
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return f"i:{int(seed)}"
    raise ValueError(f"seed must be an int or a str, got {seed!r}")


def _unit_hash(seed_key: str, order: int, cell: int) -> float:
    digest = hashlib.sha256(f"{seed_key}|{order}|{cell}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _finest_order(min_cell_deg: float) -> int:
    """Finest order in [0, AUTO_MAX_ORDER] whose cells are >= min_cell_deg (0 if none is)."""
    for order in range(AUTO_MAX_ORDER, -1, -1):
        if nside_to_pixel_resolution(2**order).to_value(u.deg) >= min_cell_deg:
            return order
    return 0


def assign_splits(
    fields: Iterable[Field],
    validation_fraction: float,
    test_fraction: float,
    seed: int | str,
    order: int | None = None,
) -> Splits:
    """Assign every field to "train", "validation" or "test" so that no HEALPix cell is in two splits.

    Fields sharing a cell (transitively) form a component; each component goes whole to the split
    picked by a hash of (seed, order, smallest cell of the component). With `order=None` the order
    is the finest whose cells are >= 4x the largest field radius; if that leaves one component with
    more than half of the fields, finer orders down to cells of 2x the largest radius are tried.
    The returned dict has a `.report` with the order used and the achieved fractions.
    """
    validation_fraction = _check_fraction("validation_fraction", validation_fraction)
    test_fraction = _check_fraction("test_fraction", test_fraction)
    if validation_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"validation_fraction + test_fraction must be < 1 to leave fields for training, "
            f"got {validation_fraction} + {test_fraction} = {validation_fraction + test_fraction}"
        )
    seed_key = _seed_key(seed)
    fields = list(fields)
    if not all(isinstance(f, Field) for f in fields):
        raise ValueError("fields must be Field(id, ra, dec, radius_deg) instances")
    dupes = sorted(repr(i) for i, n in Counter(f.id for f in fields).items() if n > 1)
    if dupes:
        raise ValueError(f"field ids must be unique, repeated: {', '.join(dupes[:10])}")

    def cells_at(o: int) -> list[set[int]]:
        return [_cells_of_cone(float(f.ra), float(f.dec), float(f.radius_deg), o) for f in fields]

    automatic = order is None
    if automatic:
        r_max = max((float(f.radius_deg) for f in fields), default=0.0)
        first, last = _finest_order(CELL_TO_RADIUS * r_max), _finest_order(CELL_TO_RADIUS_RELAXED * r_max)
        chosen = None
        for o in range(first, last + 1):
            cells = cells_at(o)
            comps = _components(cells)
            if o == first:
                chosen = (o, cells, comps)
            if max((len(c) for c in comps), default=0) <= MAX_COMPONENT_SHARE * len(fields):
                chosen = (o, cells, comps)
                break
        assert chosen is not None
        order, cells, comps = chosen
    else:
        order = _check_order(order)
        cells = cells_at(order)
        comps = _components(cells)

    result: dict = {}
    for comp in comps:
        key_cell = min(c for i in comp for c in cells[i])
        h = _unit_hash(seed_key, order, key_cell)
        split = "test" if h < test_fraction else "validation" if h < test_fraction + validation_fraction else "train"
        for i in comp:
            result[fields[i].id] = split

    counts = {s: 0 for s in SPLITS}
    for s in result.values():
        counts[s] += 1
    n = len(fields)
    report = SplitReport(
        order=order,
        order_chosen_automatically=automatic,
        cell_size_deg=float(nside_to_pixel_resolution(2**order).to_value(u.deg)),
        n_fields=n,
        n_components=len(comps),
        largest_component_fields=max((len(c) for c in comps), default=0),
        requested={
            "train": 1.0 - validation_fraction - test_fraction,
            "validation": validation_fraction,
            "test": test_fraction,
        },
        achieved={s: (counts[s] / n if n else 0.0) for s in SPLITS},
        counts=counts,
    )
    return Splits(result, report)


# --------------------------------------------------------------------------- tile index


def tile_index(
    width: int,
    height: int,
    tile: int,
    stride: int,
    valid_mask: np.ndarray | None = None,
    min_valid: float = 0.9,
) -> list[tuple[int, int]]:
    """Lower-left corners (x0, y0) of tile x tile training crops on a regular grid, row by row from y0 = 0.

    x0 runs over 0, stride, ... <= width - tile (likewise y0), so every crop lies inside the image;
    the last `(width - tile) % stride` columns (rows) are only covered when the grid reaches them.
    `valid_mask` is a (height, width) array in FITS orientation (`mask[y, x]`, row 0 at the bottom;
    nonzero = valid); a crop is kept when its valid fraction is >= min_valid. An image smaller than
    one tile yields no crops.
    """
    for name, value in (("width", width), ("height", height), ("tile", tile), ("stride", stride)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name} must be an integer, got {value!r}")
    if width < 0 or height < 0:
        raise ValueError(f"image size must be >= 0, got {width} x {height}")
    if tile < 1 or stride < 1:
        raise ValueError(f"tile and stride must be >= 1 pixel, got tile={tile}, stride={stride}")
    if not (isinstance(min_valid, (int, float)) and 0.0 <= min_valid <= 1.0):
        raise ValueError(f"min_valid must be a fraction in [0, 1], got {min_valid!r}")
    xs = range(0, width - tile + 1, stride)
    ys = range(0, height - tile + 1, stride)
    if valid_mask is None:
        return [(int(x), int(y)) for y in ys for x in xs]
    mask = np.asarray(valid_mask)
    if mask.shape != (height, width):
        raise ValueError(f"valid_mask must have shape (height, width) = ({height}, {width}), got {mask.shape}")
    if not len(xs) or not len(ys):
        return []
    # Summed-area table with a zero row/column in front: sum over [y0, y0+t) x [x0, x0+t) in O(1).
    sat = np.zeros((height + 1, width + 1), dtype=np.int64)
    sat[1:, 1:] = np.cumsum(np.cumsum(mask != 0, axis=0, dtype=np.int64), axis=1)
    x0 = np.fromiter(xs, dtype=np.int64)
    y0 = np.fromiter(ys, dtype=np.int64)
    yy, xx = np.meshgrid(y0, x0, indexing="ij")
    valid = sat[yy + tile, xx + tile] - sat[yy, xx + tile] - sat[yy + tile, xx] + sat[yy, xx]
    keep = valid >= min_valid * tile * tile - 1e-9
    return [(int(x), int(y)) for y, x in zip(yy[keep], xx[keep], strict=True)]
