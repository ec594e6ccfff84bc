"""Cutout geometry (#5): footprint -> WCS -> survey grid, proved with the local universe's
catalogue stars in cutouts from the hips2fits stand-in; orientation, poles, RA = 0, tiles and
mosaic, the canonical key, bad input, and the coverage verdict."""

from __future__ import annotations

import json
import math

import astropy.units as u
import grpc
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.wcs import WCS
from astroquery.hips2fits import hips2fitsClass
from scipy.ndimage import gaussian_filter

from services.api import common_pb2
from services.crawler.avm import fits_header
from services.cutouts import coverage, geometry
from services.cutouts.geometry import FootprintSpec, Limits, footprint_key, outreach_wcs, survey_grid, tiles, validate
from services.cutouts.surveys import DEFAULT_SURVEYS, Survey, parse_surveys, slug
from services.runtime.errors import InvalidArgument
from services.universe.render import in_survey_footprint
from services.universe.replicas.archive_avm import FieldWcs
from services.universe.sky import Sky
from tests.support.stars import centroid_offsets, isolated_bright_stars

DSS, SDSS = "CDS/P/DSS2/color", "CDS/P/SDSS9/color"
SURVEYS = {s.hips: s for s in parse_surveys(DEFAULT_SURVEYS).values()}
LIMITS = Limits()
OUTREACH = (1000, 750)  # outreach grid (px): survey grids come out ~500 x 380 at the native scales


def fetch(client: hips2fitsClass, hips: str, wcs: WCS) -> tuple[np.ndarray, WCS]:
    """(3, H, W) float cube and the WCS the service says it is on."""
    hdul = client.query_with_wcs(hips=hips, wcs=wcs, format="fits")
    return hdul[0].data.astype(np.float64), WCS(hdul[0].header).celestial


def crawler_meta(ra: float, dec: float, fov_x: float, angle: float, size: tuple[int, int]) -> dict:
    """A meta.json as the crawler writes it from an AVM: a full header at pixel_size whose
    reference pixel (at ra, dec) is *not* the grid centre (AVM allows any), centre/fov/angle
    derived from it."""
    w, h = size
    scale = fov_x / 60 / w
    crpix = ((w + 1) / 2 + 137.25, (h + 1) / 2 - 88.5)
    header = fits_header(ra, dec, crpix, (-scale, scale), angle, size)
    centre = WCS(header).pixel_to_world((w - 1) / 2, (h - 1) / 2)
    return {
        "id": "heic0000a",
        "pixel_size": {"width": w, "height": h},
        "center": {"ra_deg": centre.ra.deg, "dec_deg": centre.dec.deg},
        "fov_arcmin": {"x": fov_x, "y": fov_x * h / w},
        "north_angle_deg": angle,
        "pixel_scale_arcsec": scale * 3600,
        "wcs": header,
    }


def north_angle(wcs: WCS, x: float, y: float) -> float:
    """Angle of north from the image's +y axis at pixel (x, y), positive towards -x (left);
    central difference over 1 arcsec on the sky."""
    here = wcs.pixel_to_world(x, y)
    (x0, x1), (y0, y1) = wcs.world_to_pixel(
        SkyCoord([here.directional_offset_by(a * u.deg, 0.5 * u.arcsec) for a in (180.0, 0.0)])
    )
    return math.degrees(math.atan2(-(x1 - x0), y1 - y0))


# -- the geometric proof: stars where the WCS says -----------------------------------------

CASES = [
    # id, survey, centre, fov_x (arcmin), north angle (deg, + = left), from a full header?
    ("dss-left", DSS, (150.1, 2.2), 6.8, 30.0, False),
    ("dss-right-header", DSS, (150.1, 2.2), 6.8, -70.0, True),
    ("dss-north-pole-header", DSS, (37.0, 88.0), 6.8, 125.0, True),
    ("dss-south-pole", DSS, (200.0, -88.0), 6.8, -150.0, False),
    ("dss-ra0", DSS, (0.01, 1.0), 6.8, 10.0, False),
    ("dss-ra0-header", DSS, (359.99, 45.0), 6.8, -45.0, True),
    ("sdss-right-header", SDSS, (180.0, 30.0), 3.4, -25.0, True),
    ("sdss-left-ra0", SDSS, (0.005, 0.5), 3.4, 60.0, False),  # stripe 82, across RA = 0
]


@pytest.mark.parametrize(
    ("hips", "centre", "fov_x", "angle", "header"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_catalogue_stars_land_where_the_survey_grid_says(
    client: hips2fitsClass,
    sky: Sky,
    hips: str,
    centre: tuple[float, float],
    fov_x: float,
    angle: float,
    header: bool,
) -> None:
    w, h = OUTREACH
    if header:
        spec = FootprintSpec.from_meta(crawler_meta(*centre, fov_x, angle, OUTREACH))
        assert spec.wcs_header is not None
    else:
        spec = FootprintSpec(*centre, fov_x, fov_x * h / w, angle, w, h)
    ra, dec = spec.ra_deg, spec.dec_deg  # the grid centre (the header's reference point is elsewhere)
    validate(spec, LIMITS)
    out_wcs, out_shape = outreach_wcs(spec)
    survey = SURVEYS[hips]
    grid, shape = survey_grid(out_wcs, out_shape, survey.native_scale_arcsec, LIMITS)
    assert max(shape) <= 512 and grid.pixel_shape == shape

    # The survey grid is the outreach image's sky: same centre, same edges, same north.
    scale = grid.proj_plane_pixel_scales()[0].to_value("arcsec")
    assert scale == pytest.approx(survey.native_scale_arcsec, rel=1e-9)
    assert shape == (round(fov_x * 60 / scale), round(fov_x * h / w * 60 / scale))
    centre_sky = out_wcs.pixel_to_world((w - 1) / 2, (h - 1) / 2)
    assert centre_sky.separation(SkyCoord(ra, dec, unit="deg")).arcsec < 1e-3
    assert grid.pixel_to_world((shape[0] - 1) / 2, (shape[1] - 1) / 2).separation(centre_sky).arcsec < 1e-6
    corners_out = out_wcs.pixel_to_world([-0.5, w - 0.5, -0.5, w - 0.5], [-0.5, -0.5, h - 0.5, h - 0.5])
    gx, gy = grid.world_to_pixel(corners_out)
    np.testing.assert_allclose(gx, [-0.5, shape[0] - 0.5] * 2, atol=0.5)  # sizes round to whole pixels
    np.testing.assert_allclose(gy, [-0.5, -0.5, shape[1] - 0.5, shape[1] - 0.5], atol=0.5)
    # North turns across a field (meridians converge), so compare it at the centre; CROTA2 is
    # the angle at the reference point, which only the fields-built footprint has at the centre.
    north = north_angle(grid, (shape[0] - 1) / 2, (shape[1] - 1) / 2)
    assert north == pytest.approx(north_angle(out_wcs, (w - 1) / 2, (h - 1) / 2), abs=1e-6)
    assert north == pytest.approx(angle, abs=1.0 if header else 1e-6)

    cube, got = fetch(client, hips, grid)
    assert cube.shape == (3, shape[1], shape[0])
    np.testing.assert_allclose(got.wcs.crpix, grid.wcs.crpix, rtol=1e-12)
    np.testing.assert_allclose(got.pixel_scale_matrix, grid.pixel_scale_matrix, rtol=1e-12, atol=1e-18)

    radius = math.hypot(*shape) / 2 * scale / 3600
    if centre[0] < 0.1 or centre[0] > 359.9:  # the field really straddles RA = 0
        field = sky.stars(ra, dec, radius)
        assert np.any(field["ra"] < 1.0) and np.any(field["ra"] > 359.0)
    stars = isolated_bright_stars(sky, grid, (shape[1], shape[0]), ra, dec, radius)
    assert len(stars) >= 2, f"only {len(stars)} usable stars"
    offsets = centroid_offsets(cube.sum(axis=0), grid, stars["ra"], stars["dec"])
    assert np.hypot(offsets[:, 0], offsets[:, 1]).max() < 0.5
    # The measurement can tell: against a WCS 1 px off, the same stars break the 0.5 px bound (the
    # centroid window follows the prediction, which pulls the measured offset down somewhat).
    shifted = grid.deepcopy()
    shifted.wcs.crpix = grid.wcs.crpix + np.array([0.6, 0.8])
    off = centroid_offsets(cube.sum(axis=0), shifted, stars["ra"], stars["dec"])
    assert np.hypot(off[:, 0], off[:, 1]).max() > 0.5


def test_fields_footprint_is_the_archive_replicas_truth() -> None:
    """Centre/fov/angle/grid give the WCS the archive replica renders outreach images with."""
    truth = FieldWcs.centred(83.82, -5.39, 7.5, 1280, 960, -41.5)
    wcs, shape = outreach_wcs(FootprintSpec(83.82, -5.39, 7.5, 7.5 * 960 / 1280, -41.5, 1280, 960))
    assert shape == (1280, 960)
    xs, ys = np.meshgrid([0, 640, 1279], [0, 480, 959])
    np.testing.assert_allclose(
        np.array(wcs.pixel_to_world_values(xs, ys)), np.array(truth.to_wcs().pixel_to_world_values(xs, ys)), atol=1e-9
    )


def test_north_left_means_a_star_due_north_is_up_and_left(client: hips2fitsClass, sky: Sky) -> None:
    """The convention, with a real star: centre the footprint 1.5' due south of a bright isolated
    star, turn north 30° left of vertical, and find the star's light up and to the left."""
    probe, probe_shape = survey_grid(*outreach_wcs(FootprintSpec(150.1, 2.2, 6.8, 5.1, 0.0, 1000, 750)), 0.805, LIMITS)
    candidates = isolated_bright_stars(sky, probe, (probe_shape[1], probe_shape[0]), 150.1, 2.2, 0.06)
    star = candidates[int(np.argmin(candidates["phot_g_mean_mag"]))]
    star_c = SkyCoord(star["ra"], star["dec"], unit="deg")
    centre = SkyCoord(star["ra"], star["dec"] - 1.5 / 60, unit="deg")  # due south: same RA, lower Dec
    spec = FootprintSpec(centre.ra.deg, centre.dec.deg, 6.8, 5.1, 30.0, 1000, 750)
    grid, shape = survey_grid(*outreach_wcs(spec), SURVEYS[DSS].native_scale_arcsec, LIMITS)
    cube, _ = fetch(client, DSS, grid)
    image = cube.sum(axis=0)
    # Where the light is, measured in the pixels (the WCS only seeds the centroid window).
    x, y = np.array(grid.world_to_pixel(star_c)) + centroid_offsets(image, grid, [star["ra"]], [star["dec"]])[0]
    dx, dy = x - (shape[0] - 1) / 2, y - (shape[1] - 1) / 2  # FITS orientation: +y is up
    assert dx < 0 and dy > 0, (dx, dy)
    assert math.degrees(math.atan2(-dx, dy)) == pytest.approx(30.0, abs=1.0)
    assert math.hypot(dx, dy) * SURVEYS[DSS].native_scale_arcsec == pytest.approx(90.0, abs=1.0)
    # And it is a star indeed: its pixel is among the brightest 0.5% of the picture.
    assert image[y.round().astype(int), x.round().astype(int)] > np.percentile(image, 99.5)


# -- survey grid details ----------------------------------------------------------------


def test_outreach_grid_itself_and_header_wins() -> None:
    meta = crawler_meta(150.1, 2.2, 6.0, 12.0, (800, 600))
    meta["north_angle_deg"] = -99.0  # labels disagreeing with the AVM: the header wins
    spec = FootprintSpec.from_meta(meta)
    wcs, shape = outreach_wcs(spec)
    assert shape == (800, 600)
    grid, same = survey_grid(wcs, shape, None, LIMITS)
    assert same == shape
    xs, ys = np.meshgrid([0, 399.5, 799], [0, 299.5, 599])
    np.testing.assert_allclose(
        np.array(grid.pixel_to_world_values(xs, ys)), np.array(wcs.pixel_to_world_values(xs, ys)), atol=1e-10
    )
    assert north_angle(grid, 399.5, 299.5) == pytest.approx(12.0, abs=0.01)  # CROTA2 is at the reference point


def test_from_proto_matches_from_meta_and_fields() -> None:
    meta = crawler_meta(210.8, 54.35, 9.0, -33.0, (1200, 900))
    fp = common_pb2.Footprint(
        center=common_pb2.SkyPosition(ra_deg=meta["center"]["ra_deg"], dec_deg=meta["center"]["dec_deg"]),
        fov_x_arcmin=9.0,
        fov_y_arcmin=6.75,
        north_angle_deg=-33.0,
        grid=common_pb2.PixelGrid(width=1200, height=900),
        wcs_header_json=json.dumps(meta["wcs"], sort_keys=True),
    )
    from_proto, from_meta = FootprintSpec.from_proto(fp), FootprintSpec.from_meta(meta)
    assert from_proto == from_meta
    grids = []
    for spec in (from_proto, FootprintSpec(from_proto.ra_deg, from_proto.dec_deg, 9.0, 6.75, -33.0, 1200, 900)):
        validate(spec, LIMITS)
        grids.append(survey_grid(*outreach_wcs(spec), SURVEYS[DSS].native_scale_arcsec, LIMITS))
    (header_grid, shape), (fields_grid, fields_shape) = grids
    assert shape == fields_shape
    # Both describe one field, but not one grid (hence two keys): the header's tangent point is
    # off-centre and its CROTA2 is the north angle *there*; meridians converge, so at the centre
    # north differs by ~0.02 deg at this Dec, a few tenths of a pixel at the corners.
    xs, ys = np.meshgrid(np.linspace(0, shape[0] - 1, 5), np.linspace(0, shape[1] - 1, 5))
    px, py = fields_grid.world_to_pixel(header_grid.pixel_to_world(xs, ys))
    assert np.hypot(px - xs, py - ys).max() < 0.3
    assert footprint_key("dss2-color", header_grid, shape) != footprint_key("dss2-color", fields_grid, shape)


def test_footprint_key_is_canonical() -> None:
    def key(survey: str = "dss2-color", **kw: float) -> str:
        args = {"ra": 150.1, "dec": 2.2, "fov": 6.0, "angle": 30.0, "w": 1000, "h": 750, "scale": 0.805} | kw
        spec = FootprintSpec(
            args["ra"], args["dec"], args["fov"], args["fov"] * 0.75, args["angle"], args["w"], args["h"]
        )
        return footprint_key(survey, *survey_grid(*outreach_wcs(spec), args["scale"], LIMITS))

    base = key()
    assert len(base) == 32 and int(base, 16) >= 0
    assert key() == base
    assert key(ra=150.1 + 1e-13, angle=30.0 - 1e-12) == base  # float noise
    assert key(ra=150.1 + 360.0) == base  # the same sky
    changed = [
        key("sdss9-color"),
        key(ra=150.1 + 1e-6),
        key(dec=2.2 - 1e-6),
        key(scale=0.806),
        key(angle=30.01),
        key(w=1000, h=760),  # another shape
        key(fov=6.1),  # another extent: another shape at the same scale
    ]
    assert base not in changed and len(set(changed)) == len(changed)

    # One grid spelled three ways (CDELT+PC, CD, CROTA2) is one key.
    grid, shape = survey_grid(*outreach_wcs(FootprintSpec(150.1, 2.2, 6.0, 4.5, 30.0, 1000, 750)), 0.805, LIMITS)
    as_cd = WCS(naxis=2)
    as_cd.wcs.ctype, as_cd.wcs.crval, as_cd.wcs.crpix = grid.wcs.ctype, grid.wcs.crval, grid.wcs.crpix
    as_cd.wcs.cd = grid.pixel_scale_matrix
    as_cd.wcs.radesys = "ICRS"
    s = 0.805 / 3600
    as_crota = WCS(fits_header(150.1, 2.2, tuple(grid.wcs.crpix), (-s, s), 30.0, shape) | {"RADESYS": "ICRS"})
    as_crota.wcs.radesys = "ICRS"
    assert footprint_key("dss2-color", as_cd, shape) == footprint_key("dss2-color", grid, shape)
    assert footprint_key("dss2-color", as_crota, shape) == footprint_key("dss2-color", grid, shape)


# -- bad input --------------------------------------------------------------------------

GOOD = {"ra_deg": 150.1, "dec_deg": 2.2, "fov_x_arcmin": 6.0, "fov_y_arcmin": 4.5, "north_angle_deg": 0.0}


@pytest.mark.parametrize(
    ("change", "field", "bound"),
    [
        ({"dec_deg": 90.5}, "center.dec_deg", "[-90, 90]"),
        ({"dec_deg": -91.0}, "center.dec_deg", "[-90, 90]"),
        ({"ra_deg": math.nan}, "center.ra_deg", "finite"),
        ({"fov_x_arcmin": 0.0}, "fov_x_arcmin", "> 0"),
        ({"fov_y_arcmin": -2.0}, "fov_y_arcmin", "> 0"),
        ({"fov_x_arcmin": 0.01}, "fov_x_arcmin", "< minimum 0.05 arcmin"),
        ({"fov_y_arcmin": 1200.0}, "fov_y_arcmin", "> maximum 10 deg"),
        ({"north_angle_deg": math.inf}, "north_angle_deg", "finite"),
        ({"width": 0}, "grid.width", "> 0 px"),
        ({"height": -5}, "grid.height", "> 0 px"),
        (
            {"wcs_header": {"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "NAXIS1": 10, "NAXIS2": 10, "CDELT1": 0.0}},
            "wcs_header_json",
            "degenerate",
        ),
        (
            {"wcs_header": {"CTYPE1": "PIXEL", "CTYPE2": "PIXEL", "NAXIS1": 10, "NAXIS2": 10}},
            "wcs_header_json",
            "celestial",
        ),
        (
            {"wcs_header": {"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CDELT1": -1e-4, "CDELT2": 1e-4}, "width": 0},
            "wcs_header_json",
            "NAXIS1",
        ),
        (
            {
                "wcs_header": {
                    "CTYPE1": "RA---TAN",
                    "CTYPE2": "DEC--TAN",
                    "NAXIS1": 10**6,
                    "NAXIS2": 10,
                    "CDELT1": -1e-3,
                    "CDELT2": 1e-3,
                }
            },
            "x extent",
            "> maximum 10 deg",
        ),
    ],
)
def test_validate_names_the_broken_bound(change: dict, field: str, bound: str) -> None:
    spec = FootprintSpec(**(GOOD | {"width": 1000, "height": 750} | change))
    with pytest.raises(InvalidArgument) as info:
        validate(spec, LIMITS)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in str(info.value) and bound in str(info.value), str(info.value)


def test_survey_grid_over_the_limits_names_the_bound() -> None:
    wcs, shape = outreach_wcs(FootprintSpec(**GOOD, width=1000, height=750))
    with pytest.raises(InvalidArgument, match=r"survey grid width: 12000 > 8192 px at 0.03 arcsec/px"):
        survey_grid(wcs, shape, 0.03, LIMITS)
    with pytest.raises(InvalidArgument, match=r"survey grid: 3600 x 2700 = 9720000 > 5000000 pixels"):
        survey_grid(wcs, shape, 0.1, Limits(max_pixels=5_000_000))
    with pytest.raises(InvalidArgument, match=r"height: 3000 > 2000 px \(the outreach grid\)"):
        survey_grid(*outreach_wcs(FootprintSpec(**GOOD, width=1000, height=3000)), None, Limits(max_side_px=2000))


def test_surveys_configuration() -> None:
    surveys = parse_surveys(DEFAULT_SURVEYS)
    assert list(surveys) == ["dss2-color", "sdss9-color"]
    assert surveys["dss2-color"] == Survey("dss2-color", DSS, pytest.approx(0.805, abs=1e-3))
    assert surveys["sdss9-color"].native_scale_arcsec == pytest.approx(0.4026, abs=1e-3)
    assert slug("CDS/P/2MASS/color") == "2mass-color" and slug(SDSS) == "sdss9-color"
    custom = parse_surveys(" CDS/P/2MASS/color = 1.0 ,CDS/P/DSS2/color=0.9")
    assert custom["2mass-color"].native_scale_arcsec == 1.0 and custom["dss2-color"].native_scale_arcsec == 0.9
    with pytest.raises(ValueError, match="native pixel scale unknown"):
        parse_surveys("CDS/P/2MASS/color")
    with pytest.raises(ValueError, match="> 0"):
        parse_surveys("CDS/P/DSS2/color=-1")


# -- tiles and mosaic -----------------------------------------------------------------------


def big_grid() -> tuple[WCS, tuple[int, int]]:
    spec = FootprintSpec(150.3, 2.0, 6.8, 5.2, -20.0, 1000, 765)
    return survey_grid(*outreach_wcs(spec), SURVEYS[DSS].native_scale_arcsec, LIMITS)


def test_tiles_partition_the_grid() -> None:
    grid, shape = big_grid()
    parts = tiles(grid, shape, 200, 30_000)
    assert len(parts) > 4
    covered = np.zeros((shape[1], shape[0]), dtype=int)
    for t in parts:
        assert t.width <= 200 and t.height <= 200 and t.width * t.height <= 30_000
        covered[t.y0 : t.y0 + t.height, t.x0 : t.x0 + t.width] += 1
        assert t.wcs.pixel_shape == (t.width, t.height)
        # The tile's pixel (i, j) is the grid's pixel (x0 + i, y0 + j).
        np.testing.assert_allclose(
            t.wcs.pixel_to_world_values([0, t.width - 1], [0, t.height - 1]),
            grid.pixel_to_world_values([t.x0, t.x0 + t.width - 1], [t.y0, t.y0 + t.height - 1]),
            atol=1e-11,
        )
    assert np.all(covered == 1)
    assert len(tiles(grid, shape, 8192, 40_000_000)) == 1


def test_mosaic_of_tiles_is_the_whole_exactly(client: hips2fitsClass) -> None:
    """tiles() + mosaic() are lossless: tiles cut from one stand-in render put back together
    give that render (blank NaN pixels included)."""
    grid, shape = big_grid()
    whole, _ = fetch(client, DSS, grid)
    whole[:, 40:90, 100:180] = np.nan  # a blank patch across a tile edge
    parts = [(t, whole[:, t.y0 : t.y0 + t.height, t.x0 : t.x0 + t.width]) for t in tiles(grid, shape, 200, 30_000)]
    out = geometry.mosaic(parts, grid, shape)
    assert out.shape == whole.shape and out.dtype == np.float32
    assert np.array_equal(np.isnan(out), np.isnan(whole))
    assert np.nanmax(np.abs(out - whole)) < 1e-3


def test_tiles_off_the_target_pixels_are_reprojected() -> None:
    """A tile whose grid does not sit on the target's pixels (half a pixel off) goes through
    reproject: a smooth image comes back interpolated, not pasted half a pixel wrong."""
    grid = WCS(naxis=2)
    grid.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    grid.wcs.crval, grid.wcs.crpix, grid.wcs.cdelt = [150.0, 2.0], [40.5, 30.5], [-1 / 3600, 1 / 3600]
    grid.pixel_shape = (80, 60)
    yy, xx = np.mgrid[0:60, 0:80].astype(np.float32)
    smooth = np.stack([xx, yy, xx + yy])  # linear ramps: bilinear interpolation is exact on them
    shifted = grid.deepcopy()
    shifted.wcs.crpix = grid.wcs.crpix + np.array([0.5, 0.0])  # the tile's pixel i is the target's i - 0.5
    tile = geometry.Tile(0, 0, 80, 60, shifted)
    values = np.stack([xx - 0.5, yy, xx - 0.5 + yy])  # what the sky holds on the shifted grid
    out = geometry.mosaic([(tile, values)], grid, (80, 60))
    inner = (slice(None), slice(2, -2), slice(2, -2))
    np.testing.assert_allclose(out[inner], smooth[inner], atol=1e-3)


def test_mosaic_of_fetched_tiles_matches_a_single_request(client: hips2fitsClass, sky: Sky) -> None:
    """Each tile asked of the stand-in on its own comes back on exactly the tile's grid and the
    mosaic lines up with one request of the whole: no seam, stars where the WCS says. Pixel values
    agree only to the noise: the stand-in seeds its plate grain and noise from each request's
    footprint (the real HiPS's pixels are fixed on the sky), so two renders differ by ~2 units."""
    grid, shape = big_grid()
    whole, _ = fetch(client, DSS, grid)
    parts = []
    for t in tiles(grid, shape, 256, 10**9):
        cube, got = fetch(client, DSS, t.wcs)
        np.testing.assert_allclose(got.wcs.crpix, t.wcs.wcs.crpix, rtol=1e-12)
        parts.append((t, cube))
    assert len(parts) == 4
    out = geometry.mosaic(parts, grid, shape)
    assert not np.isnan(out).any()
    diff = np.abs(out - whole).mean(axis=0)
    assert diff.mean() < 3.0
    smooth = np.abs(gaussian_filter(out.mean(axis=0), 3) - gaussian_filter(whole.mean(axis=0), 3))[6:-6, 6:-6]
    assert np.percentile(smooth, 99) < 2.5
    # No seam: along the tile edges the two differ no more than anywhere else.
    x_edge, y_edge = parts[1][0].x0, parts[2][0].y0
    assert diff[:, x_edge - 2 : x_edge + 2].mean() < 1.3 * diff.mean()
    assert diff[y_edge - 2 : y_edge + 2].mean() < 1.3 * diff.mean()
    centre = grid.pixel_to_world((shape[0] - 1) / 2, (shape[1] - 1) / 2)
    stars = isolated_bright_stars(sky, grid, (shape[1], shape[0]), centre.ra.deg, centre.dec.deg, 0.07)
    assert len(stars) >= 2
    offsets = centroid_offsets(out.sum(axis=0).astype(float), grid, stars["ra"], stars["dec"])
    assert np.hypot(offsets[:, 0], offsets[:, 1]).max() < 0.5


# -- coverage ---------------------------------------------------------------------------------


def test_coverage_verdicts(client: hips2fitsClass) -> None:
    outside, inside = (10.0, -30.0), (180.0, 30.0)
    assert not in_survey_footprint(SDSS, *outside) and in_survey_footprint(SDSS, *inside)

    def cutout(hips: str, ra: float, dec: float) -> np.ndarray:
        grid, _ = survey_grid(*outreach_wcs(FootprintSpec(ra, dec, 1.0, 0.75, 15.0, 400, 300)), None, LIMITS)
        return client.query_with_wcs(hips=hips, wcs=grid, format="fits")[0].data

    blank = cutout(SDSS, *outside)
    assert blank.dtype == np.uint8 and not blank.any()  # the service's "no data": zeros, not an error
    ok, reason = coverage.assess(blank)
    assert not ok and reason == "outside the survey's footprint (100% blank)"
    as_float = np.where(blank == 0, np.nan, blank.astype(np.float32))  # as upstream hands it on
    assert coverage.assess(as_float) == (False, reason)
    assert coverage.assess(cutout(DSS, *outside)) == (True, "")
    assert coverage.assess(cutout(SDSS, *inside)) == (True, "")

    white = np.full((3, 64, 64), 255, dtype=np.uint8)
    ok, reason = coverage.assess(white)
    assert not ok and reason.startswith("white/saturated (100%")
    ok, reason = coverage.assess(np.full((3, 64, 64), 37.0, dtype=np.float32))
    assert not ok and reason.startswith("empty: constant image")
    half = np.full((3, 64, 64), np.nan, dtype=np.float32)
    half[:, :20] = np.random.default_rng(1).uniform(10, 200, (3, 20, 64))
    ok, reason = coverage.assess(half)
    assert not ok and "69% blank" in reason
