"""The Gaia TAP stand-in, through astroquery.gaia and pyvo unchanged: cone searches give
exactly the sky model's stars, the real DR3 rows come back with their real values, TOP /
ORDER BY / magnitude cuts work, every output format parses, and unsupported or wrong
queries come back as TAP errors that the clients raise with the server's message."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import astropy.units as u
import numpy as np
import pytest
import pyvo
import requests
from astropy.coordinates import SkyCoord
from astroquery.gaia import GaiaClass

from services.universe.replicas import gaia_source
from services.universe.replicas.gaia_query import separation_deg
from services.universe.replicas.gaia_tap import TAP, GaiaTapReplica
from services.universe.sky import Sky

FIELD = (150.1, 2.2, 0.12)  # a synthetic field: ra, dec, radius (deg)
REAL = (280.0, -60.0, 0.02)  # the cone astroquery's shipped DR3 rows fill

# Real DR3 metadata has units astropy does not parse (log(cm.s**-2)): clients warn, as with the archive.
pytestmark = pytest.mark.filterwarnings("ignore::astropy.io.votable.exceptions.W50")


def cone(ra: float, dec: float, radius: float, columns: str = "*", extra: str = "", top: str = "") -> str:
    return (
        f"SELECT {top} {columns} FROM gaiadr3.gaia_source "
        f"WHERE 1=CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', {ra}, {dec}, {radius})) {extra}"
    )


@pytest.fixture(scope="module")
def sky() -> Sky:
    return Sky()


@pytest.fixture(scope="module")
def replica(sky: Sky) -> Iterator[GaiaTapReplica]:
    server = GaiaTapReplica(sky).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gaia(replica: GaiaTapReplica) -> GaiaClass:
    client = GaiaClass(gaia_tap_server=replica.url, gaia_data_server=replica.url)
    client.ROW_LIMIT = -1  # no TOP from astroquery: the whole cone
    return client


def test_cone_search_sync_and_async_return_the_sky_model_stars(gaia: GaiaClass, sky: Sky) -> None:
    ra, dec, radius = FIELD
    expected = sky.stars(ra, dec, radius)
    assert len(expected) > 20
    centre = SkyCoord(ra, dec, unit="deg")
    for job in (gaia.cone_search(centre, radius=radius * u.deg), gaia.cone_search_async(centre, radius=radius * u.deg)):
        table = job.get_results()
        assert sorted(table["source_id"]) == sorted(expected["source_id"])
        assert list(table["dist"]) == sorted(table["dist"])  # ORDER BY dist ASC
        assert len(table.colnames) == 153  # every gaia_source column, then dist
        row = table[np.flatnonzero(table["source_id"] == expected["source_id"][0])[0]]
        for name in ("ra", "dec", "parallax", "pmra", "pmdec", "phot_g_mean_mag"):
            assert row[name] == pytest.approx(float(expected[name][0]), rel=1e-6)
        assert row["designation"] == f"Gaia DR3 {expected['source_id'][0]}"


def test_real_dr3_rows_come_back_with_their_real_values(gaia: GaiaClass) -> None:
    real = gaia_source.real_rows()
    table = gaia.cone_search(SkyCoord(REAL[0], REAL[1], unit="deg"), radius=REAL[2] * u.deg).get_results()
    shipped = [sid for sid in table["source_id"] if int(sid) in real]
    assert len(shipped) >= 40
    for sid in shipped:
        row, truth = table[np.flatnonzero(table["source_id"] == sid)[0]], real[int(sid)]
        for name in ("ra", "dec", "parallax", "pmra", "ruwe", "phot_g_mean_mag", "bp_rp", "l", "b", "random_index"):
            if truth[name] is None:
                assert np.ma.is_masked(row[name])
            else:
                assert float(row[name]) == pytest.approx(truth[name], rel=1e-6)
        assert row["phot_variable_flag"] == truth["phot_variable_flag"]
        assert bool(row["has_xp_continuous"]) == truth["has_xp_continuous"]


def test_top_order_by_and_magnitude_cut(gaia: GaiaClass, sky: Sky) -> None:
    ra, dec, radius = FIELD
    stars = sky.stars(ra, dec, radius)
    dist = separation_deg(stars["ra"], stars["dec"], ra, dec)
    nearest = stars["source_id"][np.argsort(dist)[:5]]
    query = cone(
        ra, dec, radius, f"source_id, DISTANCE(POINT('ICRS', ra, dec), POINT('ICRS', {ra}, {dec})) AS dist",
        "ORDER BY dist ASC", top="TOP 5",
    )  # fmt: skip
    table = gaia.launch_job(query).get_results()
    assert list(table["source_id"]) == list(nearest)
    assert table["dist"][0] == pytest.approx(float(np.sort(dist)[0]), abs=1e-12)

    bright = stars[stars["phot_g_mean_mag"] < 18.5]
    query = cone(ra, dec, radius, "source_id, phot_g_mean_mag AS g", "AND phot_g_mean_mag < 18.5 ORDER BY g DESC")
    table = gaia.launch_job_async(query).get_results()
    assert sorted(table["source_id"]) == sorted(bright["source_id"])
    assert list(table["g"]) == sorted(table["g"], reverse=True)


def test_every_output_format_parses(gaia: GaiaClass, sky: Sky) -> None:
    ra, dec, radius = FIELD
    expected = sorted(sky.stars(ra, dec, radius / 2)["source_id"])
    query = cone(ra, dec, radius / 2, "source_id, ra, dec, phot_g_mean_mag, ruwe", "ORDER BY source_id")
    for fmt in ("votable_gzip", "votable", "votable_plain", "csv", "json", "fits", "ecsv"):
        table = gaia.launch_job(query, output_format=fmt).get_results()
        assert list(table["source_id"]) == expected, fmt
        assert table["phot_g_mean_mag"][0] == pytest.approx(
            float(sky.stars(ra, dec, radius / 2)["phot_g_mean_mag"][0]), rel=1e-6
        )


def test_query_by_source_id_without_a_position(gaia: GaiaClass, sky: Sky) -> None:
    ra, dec, radius = FIELD
    wanted = [int(s) for s in sky.stars(ra, dec, radius)["source_id"][:3]]
    real_id = next(iter(gaia_source.real_rows()))
    query = (
        f"SELECT source_id, ra FROM gaiadr3.gaia_source WHERE source_id IN ({', '.join(map(str, [*wanted, real_id]))})"
    )
    assert sorted(gaia.launch_job(query).get_results()["source_id"]) == sorted([*wanted, real_id])


def test_unsupported_and_wrong_queries_raise_with_the_server_message(gaia: GaiaClass) -> None:
    with pytest.raises(requests.HTTPError, match=r"(?s)Error 400:.*does not support the function COUNT"):
        gaia.launch_job("SELECT COUNT(*) FROM gaiadr3.gaia_source")
    with pytest.raises(SystemError, match=r"(?s)Cannot parse query .* 1 unresolved identifiers: nonsense \[l.1"):
        gaia.launch_job_async(cone(1.0, 2.0, 0.01, "nonsense"))
    with pytest.raises(requests.HTTPError, match="does not support queries without a positional constraint"):
        gaia.launch_job("SELECT TOP 10 * FROM gaiadr3.gaia_source WHERE phot_g_mean_mag < 10")
    with pytest.raises(requests.HTTPError, match="does not support OR"):
        gaia.launch_job(cone(1.0, 2.0, 0.01, extra="AND (parallax > 1 OR parallax < 0)"))
    with pytest.raises(requests.HTTPError, match=r"Encountered \"FROM\" at line 1, column 22"):
        gaia.launch_job("SELECT ra, FROM gaiadr3.gaia_source")  # astroquery adds "TOP 2000 " after SELECT


def test_tap_error_document_and_status(replica: GaiaTapReplica) -> None:
    response = requests.post(
        f"{replica.url}{TAP}/sync", data={"REQUEST": "doQuery", "LANG": "ADQL", "QUERY": "SELECT x FROM y"}, timeout=30
    )
    assert response.status_code == 400
    assert '<INFO name="QUERY_STATUS" value="ERROR">' in response.text
    assert 'Unknown table "y"' in response.text


def test_pyvo_sync_async_and_tables(replica: GaiaTapReplica, sky: Sky) -> None:
    ra, dec, radius = FIELD
    service = pyvo.dal.TAPService(f"{replica.url}{TAP}")
    query = cone(ra, dec, radius, "source_id, phot_g_mean_mag", "ORDER BY source_id")
    expected = sorted(sky.stars(ra, dec, radius)["source_id"])
    assert list(service.run_sync(query).to_table()["source_id"]) == expected
    assert list(service.run_async(query).to_table()["source_id"]) == expected  # creates, runs, polls, deletes
    assert "gaiadr3.gaia_source" in [t.name for t in service.tables]
    with pytest.raises(pyvo.dal.DALQueryError, match="unresolved identifiers"):
        service.run_async(cone(ra, dec, radius, "nonsense"))


def test_async_job_resources_and_request_log(replica: GaiaTapReplica) -> None:
    base = f"{replica.url}{TAP}/async"
    created = requests.post(
        base,
        data={"LANG": "ADQL", "QUERY": cone(*FIELD, "source_id"), "FORMAT": "json"},
        allow_redirects=False,
        timeout=30,
    )
    assert created.status_code == 303
    job_url = created.headers["Location"]
    job_id = job_url.rsplit("/", 1)[1]
    assert requests.get(f"{job_url}/phase", timeout=30).text == "PENDING"
    assert (
        requests.post(f"{job_url}/phase", data={"PHASE": "RUN"}, allow_redirects=False, timeout=30).status_code == 303
    )
    assert requests.get(f"{job_url}/phase", timeout=30).text == "COMPLETED"
    assert "<uws:phase>COMPLETED</uws:phase>" in requests.get(job_url, timeout=30).text
    result = requests.get(f"{job_url}/results/result", timeout=30)
    assert len(json.loads(result.text)["data"]) > 20
    assert requests.delete(job_url, allow_redirects=False, timeout=30).status_code == 303
    assert requests.get(job_url, timeout=30).status_code == 404

    deadline = time.monotonic() + 2.0  # the base server logs just after it answers
    while replica.count(job_id) < 7 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert replica.count(job_id) == 7  # phase x3, job, result, DELETE, job again (404)
    assert replica.count(job_id, method="DELETE", status=303) == 1
