"""Sky-region splits (HEALPix components) and the training tile index: services/curator/splits.py."""

from __future__ import annotations

import random

import astropy.units as u
import numpy as np
import pytest
from astropy_healpix import boundaries_lonlat, healpix_to_lonlat, lonlat_to_healpix, nside_to_pixel_resolution

from services.curator.splits import (
    AUTO_MAX_ORDER,
    SPLITS,
    Field,
    assign_splits,
    cell_of,
    cells_of_footprint,
    tile_index,
)

# --------------------------------------------------------------------------- helpers


def _cell_deg(order: int) -> float:
    return float(nside_to_pixel_resolution(2**order).to_value(u.deg))


def _disc_points(ra: float, dec: float, radius: float, rings: int = 24, per_ring: int = 240):
    """(ra, dec) arrays densely covering a cap, boundary included; valid at the poles."""
    r, d = np.radians(ra), np.radians(dec)
    c = np.array([np.cos(d) * np.cos(r), np.cos(d) * np.sin(r), np.sin(d)])
    a = np.array([1.0, 0.0, 0.0]) if abs(c[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = np.cross(c, a)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(c, e1)
    rho = np.radians(np.linspace(0.0, radius, rings))[:, None]
    th = np.linspace(0.0, 2 * np.pi, per_ring, endpoint=False)[None, :]
    p = np.cos(rho)[..., None] * c + np.sin(rho)[..., None] * (np.cos(th)[..., None] * e1 + np.sin(th)[..., None] * e2)
    p = p.reshape(-1, 3)
    return np.degrees(np.arctan2(p[:, 1], p[:, 0])) % 360.0, np.degrees(np.arcsin(np.clip(p[:, 2], -1, 1)))


def _sampled_cells(ra: float, dec: float, radius: float, order: int, **kw) -> set[int]:
    """Cells a cap touches, found independently of the module by sampling it densely."""
    lon, lat = _disc_points(ra, dec, radius, **kw)
    return set(lonlat_to_healpix(lon * u.deg, lat * u.deg, 2**order, order="nested").tolist())


def _random_fields(n: int, seed: int, r_min: float = 0.01, r_max: float = 0.5) -> list[Field]:
    rng = np.random.default_rng(seed)
    ra = rng.uniform(0, 360, n)
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))  # uniform on the sphere
    rad = rng.uniform(r_min, r_max, n)
    return [Field(f"f{i}", float(a), float(d), float(r)) for i, (a, d, r) in enumerate(zip(ra, dec, rad, strict=True))]


def _awkward_fields(order: int) -> list[Field]:
    """Fields on the poles, across RA = 0 and centred on cell corners (straddling 3-4 cells)."""
    cell = _cell_deg(order)
    out = [
        Field("north-pole", 0.0, 90.0, 0.3 * cell),
        Field("near-north-pole", 123.0, 89.8, 0.2 * cell),
        Field("south-pole", 200.0, -90.0, 0.1 * cell),
        Field("near-south-pole", 300.0, -89.9, 0.25 * cell),
        Field("ra0-left", 359.9, 10.0, 0.2 * cell),
        Field("ra0-right", 0.05, -20.0, 0.2 * cell),
        Field("ra0-negative", -0.2, 45.0, 0.15 * cell),
    ]
    lon, lat = boundaries_lonlat(np.array([7, 1234, 5000, 9000]) % (12 * 4**order), 1, 2**order, order="nested")
    for k, (a, d) in enumerate(zip(lon.to_value(u.deg).ravel(), lat.to_value(u.deg).ravel(), strict=True)):
        out.append(Field(f"corner{k}", float(a), float(d), 0.1 * cell))
    return out


# --------------------------------------------------------------------------- cell_of / cells_of_footprint


def test_cell_of_matches_astropy_healpix_and_wraps_ra():
    for ra, dec, order in [(10.0, 20.0, 5), (359.99, -45.0, 8), (0.0, 90.0, 3), (180.0, -90.0, 0)]:
        expected = int(lonlat_to_healpix(ra * u.deg, dec * u.deg, 2**order, order="nested"))
        assert cell_of(ra, dec, order) == expected
    assert cell_of(-10.0, 5.0, 6) == cell_of(350.0, 5.0, 6) == cell_of(710.0, 5.0, 6)
    assert 0 <= cell_of(123.4, 5.6, 0) < 12


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((10.0, 95.0, 5), "Dec must be in"),
        ((float("nan"), 0.0, 5), "finite"),
        ((10.0, 0.0, -1), "order must be in"),
        ((10.0, 0.0, 30), "order must be in"),
        ((10.0, 0.0, 2.5), "order must be an integer"),
        ((10.0, 0.0, True), "order must be an integer"),
    ],
)
def test_cell_of_rejects_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        cell_of(*args)


@pytest.mark.parametrize("order", [3, 6, 9])
def test_cone_cells_include_every_touched_cell(order):
    cell = _cell_deg(order)
    cones = [(f.ra, f.dec, f.radius_deg) for f in _awkward_fields(order)]
    cones += [(f.ra, f.dec, f.radius_deg) for f in _random_fields(25, seed=order, r_min=0.0, r_max=0.6 * cell)]
    for ra, dec, radius in cones:
        got = cells_of_footprint((ra, dec, radius), order)
        assert cell_of(ra, dec, order) in got
        assert _sampled_cells(ra, dec, radius, order) <= got, (ra, dec, radius)
        # ... and not much more: every returned cell comes within ~2% of a cell of the cap.
        assert got <= _sampled_cells(ra, dec, radius + 0.02 * cell, order, rings=40, per_ring=720), (ra, dec, radius)


def test_field_on_a_cell_corner_carries_all_cells_it_straddles():
    order = 5
    lon, lat = boundaries_lonlat(np.array([100]), 1, 2**order, order="nested")
    ra, dec = float(lon.to_value(u.deg)[0, 0]), float(lat.to_value(u.deg)[0, 0])
    got = cells_of_footprint((ra, dec, 0.05 * _cell_deg(order)), order)
    assert len(got) >= 3 and 100 in got
    # A point-like field carries the cell of its centre, or all four when it sits on their corner.
    assert cells_of_footprint((47.3, 31.7, 0.0), order) == {cell_of(47.3, 31.7, order)}
    assert len(cells_of_footprint((45.0, 30.0, 0.0), order)) == 4  # (45, 30) is a HEALPix vertex


def test_polygon_footprint_covers_its_corners_and_interior_across_ra0():
    order = 7
    corners = [(359.8, -0.3), (0.4, -0.3), (0.4, 0.2), (359.8, 0.2)]
    got = cells_of_footprint(corners, order)
    lon = np.concatenate([np.linspace(359.8, 360.0, 30), np.linspace(0.0, 0.4, 60)])
    lat = np.linspace(-0.3, 0.2, 75)
    ll, bb = np.meshgrid(lon, lat)
    inside = set(lonlat_to_healpix(ll.ravel() * u.deg, bb.ravel() * u.deg, 2**order, order="nested").tolist())
    assert inside <= got
    assert len(got) < 4 * len(inside)  # a bounding cap, not half the sky


@pytest.mark.parametrize(
    ("footprint", "match"),
    [
        ((1.0, 2.0), "footprint must be"),
        ([(1.0, 2.0), (3.0, 4.0)], "footprint must be"),
        ((10.0, 0.0, -0.1), "radius must be in"),
        ((10.0, 0.0, 90.0), "radius must be in"),
        ((10.0, 100.0, 1.0), "Dec must be in"),
        ([(0.0, 0.0), (120.0, 0.0), (240.0, 0.0)], "whole sky|hemisphere"),
    ],
)
def test_cells_of_footprint_rejects_bad_input(footprint, match):
    with pytest.raises(ValueError, match=match):
        cells_of_footprint(footprint, 5)


# --------------------------------------------------------------------------- assign_splits


@pytest.fixture(scope="module")
def mixed_fields() -> list[Field]:
    return _random_fields(250, seed=1) + _awkward_fields(4)


@pytest.fixture(scope="module")
def mixed_splits(mixed_fields):
    return assign_splits(mixed_fields, 0.15, 0.15, seed=7)


def test_every_field_gets_one_split(mixed_fields, mixed_splits):
    assert set(mixed_splits) == {f.id for f in mixed_fields}
    assert set(mixed_splits.values()) == set(SPLITS)
    rep = mixed_splits.report
    assert rep.n_fields == len(mixed_fields) == sum(rep.counts.values())
    assert sum(rep.achieved.values()) == pytest.approx(1.0)


def test_splits_are_deterministic_and_independent_of_input_order(mixed_fields, mixed_splits):
    shuffled = list(mixed_fields)
    random.Random(3).shuffle(shuffled)
    again = assign_splits(shuffled, 0.15, 0.15, seed=7)
    assert dict(again) == dict(mixed_splits)
    assert again.report == mixed_splits.report
    assert dict(assign_splits(mixed_fields, 0.15, 0.15, seed=np.int64(7))) == dict(mixed_splits)
    other = assign_splits(mixed_fields, 0.15, 0.15, seed=8)
    assert dict(other) != dict(mixed_splits)
    assert dict(assign_splits(mixed_fields, 0.15, 0.15, seed="7")) != dict(mixed_splits)


def test_no_cell_in_two_splits(mixed_fields, mixed_splits):
    order = mixed_splits.report.order
    by_field = {f.id: f for f in mixed_fields}
    for label, cells_for in [
        ("module", lambda f: cells_of_footprint((f.ra, f.dec, f.radius_deg), order)),
        ("sampled", lambda f: _sampled_cells(f.ra, f.dec, f.radius_deg, order, rings=12, per_ring=120)),
    ]:
        split_of_cell: dict[int, str] = {}
        for fid, split in mixed_splits.items():
            for c in cells_for(by_field[fid]):
                assert split_of_cell.setdefault(c, split) == split, (label, fid, c)


def test_overlapping_chain_and_straddling_fields_share_a_split():
    order = 5
    cell = _cell_deg(order)
    # A chain of overlapping fields across RA = 0 whose ends share no cell: linked only through the others.
    chain = [Field(f"chain{i}", (359.0 + 0.45 * cell * i) % 360.0, 0.5, 0.3 * cell) for i in range(5)]
    ends = [cells_of_footprint((f.ra, f.dec, f.radius_deg), order) for f in (chain[0], chain[-1])]
    assert not ends[0] & ends[1]
    # A field straddling a corner of cell 100, and a small field at the centre of each cell it touches.
    lon, lat = boundaries_lonlat(np.array([100]), 1, 2**order, order="nested")
    ra, dec = float(lon.to_value(u.deg)[0, 0]), float(lat.to_value(u.deg)[0, 0])
    straddler = Field("straddler", ra, dec, 0.05 * cell)
    touched = sorted(cells_of_footprint((ra, dec, 0.05 * cell), order))
    tenants = [Field(f"tenant{k}", *_point_in_cell(c, order), 0.01 * cell) for k, c in enumerate(touched)]
    fields = [*chain, straddler, *tenants, *_random_fields(60, seed=5, r_max=0.3 * cell)]
    for seed in range(6):
        splits = assign_splits(fields, 0.3, 0.3, seed=seed, order=order)
        assert len({splits[f.id] for f in chain}) == 1
        assert len({splits[f.id] for f in [straddler, *tenants]}) == 1


def _point_in_cell(cell: int, order: int) -> tuple[float, float]:
    lon, lat = healpix_to_lonlat(cell, 2**order, order="nested")
    return float(lon.to_value(u.deg)), float(lat.to_value(u.deg))


def test_achieved_fractions_close_to_requested():
    fields = _random_fields(300, seed=42)
    means = {s: 0.0 for s in SPLITS}
    for seed in range(4):
        rep = assign_splits(fields, 0.15, 0.1, seed=seed).report
        assert rep.requested == pytest.approx({"train": 0.75, "validation": 0.15, "test": 0.1})
        for s in SPLITS:
            # Components are assigned independently: ~0.02 standard deviation at 300 fields.
            assert abs(rep.achieved[s] - rep.requested[s]) < 0.07, (seed, rep)
            means[s] += rep.achieved[s] / 4
    for s in SPLITS:
        assert abs(means[s] - rep.requested[s]) < 0.035, means


def test_zero_fractions_and_empty_input():
    fields = _random_fields(20, seed=3)
    assert set(assign_splits(fields, 0.0, 0.0, seed=1).values()) == {"train"}
    empty = assign_splits([], 0.1, 0.1, seed=1)
    assert dict(empty) == {} and empty.report.n_components == 0


def test_automatic_order_makes_cells_at_least_four_field_radii():
    # Largest radius 0.45 deg: order 5 cells (1.83 deg) are >= 4 x 0.45, order 6 (0.92 deg) are not.
    fields = _random_fields(80, seed=9, r_max=0.45)
    rep = assign_splits(fields, 0.1, 0.1, seed=0).report
    assert rep.order_chosen_automatically and rep.order == 5
    assert rep.cell_size_deg >= 4 * max(f.radius_deg for f in fields)
    # Point-like fields: the finest automatic order.
    points = [Field(i, 10.0 * i, 0.0, 0.0) for i in range(10)]
    assert assign_splits(points, 0.1, 0.1, seed=0).report.order == AUTO_MAX_ORDER
    # An explicit order is used as given.
    rep = assign_splits(fields, 0.1, 0.1, seed=0, order=3).report
    assert rep.order == 3 and not rep.order_chosen_automatically


def test_automatic_order_refines_when_one_component_dominates():
    # Four small fields at the centres of the four order-6 children of one order-5 cell (one
    # component at order 5), plus one far-away field of 0.45 deg that sets the 4x rule to order 5.
    parent = 2000
    fields = [Field(f"child{k}", *_point_in_cell(4 * parent + k, 6), 0.01) for k in range(4)]
    fields.append(Field("big", 200.0, -30.0, 0.45))
    rep = assign_splits(fields, 0.2, 0.2, seed=0).report
    assert rep.order == 6  # cells of 0.92 deg >= 2 x 0.45 deg
    assert rep.n_components == 5 and rep.largest_component_fields == 1


@pytest.mark.parametrize(
    ("val", "test", "match"),
    [
        (-0.1, 0.1, "validation_fraction must be in"),
        (0.1, 1.0, "test_fraction must be in"),
        (float("nan"), 0.1, "validation_fraction must be in"),
        ("0.1", 0.1, "validation_fraction must be a number"),
        (True, 0.1, "validation_fraction must be a number"),
        (0.6, 0.5, "must be < 1 to leave fields for training"),
        (0.5, 0.5, "must be < 1 to leave fields for training"),
    ],
)
def test_assign_splits_rejects_bad_fractions(val, test, match):
    with pytest.raises(ValueError, match=match):
        assign_splits(_random_fields(5, seed=0), val, test, seed=0)


def test_assign_splits_rejects_bad_fields_and_order():
    fields = _random_fields(5, seed=0)
    with pytest.raises(ValueError, match=r"field ids must be unique, repeated: 'f1'"):
        assign_splits([*fields, fields[1]], 0.1, 0.1, seed=0)
    with pytest.raises(ValueError, match="must be Field"):
        assign_splits([(1, 2.0, 3.0, 0.1)], 0.1, 0.1, seed=0)
    with pytest.raises(ValueError, match="order must be in"):
        assign_splits(fields, 0.1, 0.1, seed=0, order=31)
    with pytest.raises(ValueError, match="seed must be an int or a str"):
        assign_splits(fields, 0.1, 0.1, seed=1.5)
    with pytest.raises(ValueError, match=r"field 'x': Dec must be in"):
        Field("x", 10.0, 95.0, 0.1)
    with pytest.raises(ValueError, match=r"field 'y': field radius must be in"):
        Field("y", 10.0, 5.0, -0.1)
    with pytest.raises(ValueError, match=r"field 'z': RA and Dec must be finite"):
        Field("z", float("inf"), 5.0, 0.1)


# --------------------------------------------------------------------------- tile_index


def test_tile_index_grid_bounds_and_stride():
    crops = tile_index(100, 60, tile=32, stride=16)
    assert crops == [(x, y) for y in (0, 16) for x in (0, 16, 32, 48, 64)]
    for x0, y0 in crops:
        assert x0 >= 0 and x0 + 32 <= 100 and y0 >= 0 and y0 + 32 <= 60
    assert tile_index(64, 64, tile=64, stride=10) == [(0, 0)]
    assert tile_index(63, 100, tile=64, stride=10) == []
    assert tile_index(0, 0, tile=8, stride=8) == []
    assert len(tile_index(256, 128, tile=64, stride=64)) == 4 * 2


def test_tile_index_mask_is_in_fits_orientation():
    # Missing data in the 20 bottom rows (FITS y = 0..19, array rows 0..19).
    mask = np.ones((64, 48), dtype=bool)
    mask[:20] = False
    crops = tile_index(48, 64, tile=32, stride=16, valid_mask=mask)
    # y0 = 0: 12/32 valid rows; y0 = 16: 28/32 = 0.875 < 0.9; y0 = 32: all valid.
    assert crops == [(0, 32), (16, 32)]
    assert tile_index(48, 64, tile=32, stride=16, valid_mask=mask, min_valid=0.85) == [
        (0, 16),
        (16, 16),
        (0, 32),
        (16, 32),
    ]
    assert len(tile_index(48, 64, tile=32, stride=16, valid_mask=mask, min_valid=0.0)) == 6


def test_tile_index_threshold_is_inclusive_and_matches_brute_force():
    mask = np.ones((10, 10), dtype=np.uint8)
    mask[0, :] = 0  # exactly 90% valid
    assert tile_index(10, 10, tile=10, stride=1, valid_mask=mask, min_valid=0.9) == [(0, 0)]
    assert tile_index(10, 10, tile=10, stride=1, valid_mask=mask, min_valid=0.91) == []
    rng = np.random.default_rng(0)
    mask = rng.random((50, 70)) > 0.1
    mask[10:30, 20:45] = False
    tile, stride, min_valid = 12, 5, 0.8
    expected = [
        (x, y)
        for y in range(0, 50 - tile + 1, stride)
        for x in range(0, 70 - tile + 1, stride)
        if mask[y : y + tile, x : x + tile].mean() >= min_valid
    ]
    got = tile_index(70, 50, tile=tile, stride=stride, valid_mask=mask, min_valid=min_valid)
    assert got == expected and 0 < len(got) < 12 * 8


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tile": 0}, "tile and stride must be >= 1"),
        ({"stride": 0}, "tile and stride must be >= 1"),
        ({"tile": 8.0}, "tile must be an integer"),
        ({"min_valid": 1.5}, "min_valid must be a fraction"),
        ({"valid_mask": np.ones((40, 30), dtype=bool)}, r"shape \(height, width\) = \(30, 40\)"),
    ],
)
def test_tile_index_rejects_bad_input(kwargs, match):
    args = {"width": 40, "height": 30, "tile": 8, "stride": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        tile_index(**args)
