"""Object names to positions: Sesame (the local stand-in, over real HTTP) first, the offline
OpenNGC catalogue when Sesame is off, down, hanging, erroring or does not know the name;
name normalisation; bad input; and the catalogue itself."""

from __future__ import annotations

import math
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator

import pytest
from astropy.coordinates import name_resolve

from services.gateway.names import (
    NameResolver,
    load_catalogue,
    normalise,
    parse_sesame_text,
)
from services.runtime.errors import InvalidArgument, NotFound
from services.universe.replicas.httpbase import Response
from services.universe.replicas.sesame import EXTRA_OBJECTS, PATH, SesameReplica

TIMEOUT_S = 1.0

# Real Sesame answers (astropy's test data, astropy/coordinates/tests/test_name_resolve.py).
REAL_NGC3642 = """# ngc3642    #Q2779348
#=Si=Simbad, all IDs (via url):    1    41ms
%@ 503952
%I.0 NGC 3642
%C.0 LIN
%J 170.57458768232000 +59.07452101151000 = 11:22:17.90 +59:04:28.2
%J.E [0.2819 0.3347 90] A 2020yCat.1350....0G
%V v 1583 5.3E-03 [1] D 2016A&A...595A.118V
%D 5.01 4.27 (O) D 2003A&A...412...45P
%T SA =2D800900 C 2019MNRAS.488..590B
%#B 203

#====Done (2024-Feb-15,11:26:16z)====
"""
REAL_NOTHING = "# IC 12000#Q2672097\n#! *** Nothing found *** \n#====Done (2016-Mar-04,17:43:13z)====\n"


@pytest.fixture(scope="module")
def sesame() -> Iterator[SesameReplica]:
    # Real Sesame lacks some of OpenNGC's common names: this one does not know "Whirlpool Galaxy".
    replica = SesameReplica(forget=["Whirlpool Galaxy"]).start()
    yield replica
    replica.stop()


@pytest.fixture
def sesame_url(sesame: SesameReplica) -> Iterator[str]:
    sesame.reset_log()
    yield sesame.url + PATH
    sesame.set_fault(PATH + "/-oI/SNV", None)


@pytest.fixture
def closed_port_url() -> str:
    with socket.socket() as sock:  # bound, then closed: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{PATH}"


@pytest.fixture
def hanging_url() -> Iterator[str]:
    """A server that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}{PATH}"


@pytest.fixture
def trickling_url() -> Iterator[str]:
    """A server that answers one byte every 0.2 s: each read is quick, the answer never ends."""
    stop = threading.Event()
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            for byte in b"HTTP/1.1 200 OK\r\nX-Padding: " + b"." * 1000:
                if stop.wait(0.2):
                    return
                conn.sendall(bytes([byte]))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}{PATH}"
    stop.set()
    listener.close()
    thread.join(5)


def near(a: tuple[float, float], b: tuple[float, float], arcsec: float) -> bool:
    ra1, dec1, ra2, dec2 = map(math.radians, (*a, *b))
    cos = math.sin(dec1) * math.sin(dec2) + math.cos(dec1) * math.cos(dec2) * math.cos(ra1 - ra2)
    return math.degrees(math.acos(min(1.0, cos))) * 3600 <= arcsec


# -- online: the Sesame stand-in ---------------------------------------------------------


def test_resolves_through_sesame_with_catalogue_size(sesame: SesameReplica, sesame_url: str) -> None:
    resolved = NameResolver(sesame_url, TIMEOUT_S).resolve("m 51")
    assert resolved.resolver == "sesame"
    assert resolved.name == "M 51"
    assert near((resolved.ra_deg, resolved.dec_deg), (202.4696, 47.1952), 5)
    assert resolved.size_arcmin == pytest.approx(13.71)
    assert sesame.count(PATH) == 1


def test_a_name_only_sesame_knows(sesame_url: str) -> None:
    resolver = NameResolver(sesame_url, TIMEOUT_S)
    vega = resolver.resolve("Vega")
    assert (vega.resolver, vega.name, vega.size_arcmin) == ("sesame", "* alf Lyr", 0.0)
    assert near((vega.ra_deg, vega.dec_deg), (279.2347, 38.7837), 5)
    assert all(resolver.catalogue.lookup(n) is None for obj in EXTRA_OBJECTS for n in (obj.name, *obj.aliases))
    with pytest.raises(NotFound):
        NameResolver(None).resolve("Vega")


def test_a_name_only_the_catalogue_knows(sesame: SesameReplica, sesame_url: str) -> None:
    resolved = NameResolver(sesame_url, TIMEOUT_S).resolve("whirlpool galaxy")
    assert (resolved.resolver, resolved.name) == ("offline-catalogue", "M 51")
    assert sesame.count(PATH) == 1  # Sesame was asked first and said "Nothing found"


def test_positive_answers_are_cached(sesame: SesameReplica, sesame_url: str) -> None:
    resolver = NameResolver(sesame_url, TIMEOUT_S, cache_size=2)
    first = resolver.resolve("NGC 224")
    assert resolver.resolve("ngc0224") == first  # same key, no new request
    assert sesame.count(PATH) == 1
    resolver.resolve("M 42")
    resolver.resolve("M 1")  # evicts NGC 224
    resolver.resolve("NGC 224")
    assert sesame.count(PATH) == 4


def test_astropys_own_resolver_reads_the_stand_in(sesame_url: str) -> None:
    with name_resolve.sesame_url.set([sesame_url + "/"]):
        coord = name_resolve.get_icrs_coordinates("M 42")
    assert near((coord.ra.deg, coord.dec.deg), (83.8187, -5.3897), 5)


def test_stand_in_answers_like_sesame(sesame: SesameReplica) -> None:
    def get(query: str) -> tuple[str, str]:
        with urllib.request.urlopen(f"{sesame.url}{PATH}/{query}", timeout=5) as response:
            return response.headers["Content-Type"], response.read().decode()

    kind, text = get("-oI/SNV?NGC%205194")
    answer = parse_sesame_text(text)
    assert kind.startswith("text/plain") and answer is not None
    assert answer.identifiers[0] == "M 51" and "Whirlpool Galaxy" not in answer.identifiers  # forgotten
    kind, text = get("SNV?no+such+object")
    assert text.startswith("# no such object\t#Q") and "#! *** Nothing found ***" in text
    assert parse_sesame_text(text) is None
    kind, xml = get("-oxp/SNV?Betelgeuse")
    assert kind == "text/xml" and "<jradeg>88.792939</jradeg>" in xml and "<oname>* alf Ori</oname>" in xml
    kind, xml = get("-ox?nothing%20here")
    assert "<INFO>*** Nothing found *** </INFO>" in xml


def test_parses_real_sesame_answers() -> None:
    answer = parse_sesame_text(REAL_NGC3642)
    assert answer is not None
    assert (answer.ra_deg, answer.dec_deg) == pytest.approx((170.5745877, 59.0745210))
    assert answer.identifiers == ("NGC 3642",) and answer.major_arcmin == pytest.approx(5.01)
    assert parse_sesame_text(REAL_NOTHING) is None
    assert parse_sesame_text("<html>Service unavailable</html>") is None


# -- Sesame off, down, hanging, erroring --------------------------------------------------


def test_offline_only_when_sesame_is_not_configured() -> None:
    for url in (None, "", "  ", "off"):
        resolved = NameResolver(url).resolve("Orion Nebula")
        assert (resolved.resolver, resolved.name) == ("offline-catalogue", "M 42")


def test_sesame_down_falls_back_fast(closed_port_url: str) -> None:
    started = time.monotonic()
    resolved = NameResolver(closed_port_url, TIMEOUT_S).resolve("M31")
    assert time.monotonic() - started < TIMEOUT_S + 1
    assert resolved.resolver == "offline-catalogue"
    assert near((resolved.ra_deg, resolved.dec_deg), (10.6848, 41.2691), 5)


def test_sesame_hanging_falls_back_within_the_timeout_then_is_skipped(hanging_url: str) -> None:
    resolver = NameResolver(hanging_url, TIMEOUT_S)
    started = time.monotonic()
    assert resolver.resolve("M 42").resolver == "offline-catalogue"
    assert TIMEOUT_S * 0.9 <= time.monotonic() - started < TIMEOUT_S + 1
    started = time.monotonic()  # Sesame is left alone for retry_after_s: no second timeout
    assert resolver.resolve("M 45").resolver == "offline-catalogue"
    assert time.monotonic() - started < 0.2


def test_sesame_trickling_falls_back_within_the_timeout(trickling_url: str) -> None:
    started = time.monotonic()
    assert NameResolver(trickling_url, TIMEOUT_S).resolve("M 57").resolver == "offline-catalogue"
    assert time.monotonic() - started < TIMEOUT_S + 0.5


def test_sesame_answering_garbage_falls_back() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def serve() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(4096)
                conn.sendall(b"garbage, not HTTP\r\n\r\n")

        threading.Thread(target=serve, daemon=True).start()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}{PATH}"
        assert NameResolver(url, TIMEOUT_S).resolve("M 27").resolver == "offline-catalogue"


def test_sesame_erroring_falls_back_and_is_retried_later(sesame: SesameReplica, sesame_url: str) -> None:
    sesame.set_fault(PATH + "/-oI/SNV", Response(500, b"Internal Server Error", content_type="text/plain"))
    resolver = NameResolver(sesame_url, TIMEOUT_S, retry_after_s=0.2)
    assert resolver.resolve("M 13").resolver == "offline-catalogue"
    sesame.set_fault(PATH + "/-oI/SNV", None)
    time.sleep(0.25)
    assert resolver.resolve("M 92").resolver == "sesame"


# -- unknown names, bad input, normalisation ----------------------------------------------


def test_unknown_everywhere_is_not_found_with_advice(sesame_url: str) -> None:
    with pytest.raises(NotFound, match=r"not known to Sesame or the offline catalogue.*RA/Dec"):
        NameResolver(sesame_url, TIMEOUT_S).resolve("Planet Vulcan")
    with pytest.raises(NotFound, match="offline catalogue"):
        NameResolver(None).resolve("Planet Vulcan")


@pytest.mark.parametrize("bad", ["", "   ", "x" * 201, "M 51\x00", "M\n51", "\x1b[31mM51", "+++", None])
def test_bad_names_are_invalid_arguments(bad: object, sesame: SesameReplica, sesame_url: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        NameResolver(sesame_url, TIMEOUT_S).resolve(bad)  # type: ignore[arg-type]
    assert info.value.field == "name"
    assert sesame.count(PATH) == 0  # rejected before anyone is asked


def test_name_normalisation() -> None:
    assert normalise("M 51") == normalise("M51") == normalise("messier 51") == normalise("m051") == "m51"
    assert normalise("NGC 224") == normalise("NGC0224") == normalise("ngc  224") == "ngc224"
    assert normalise("Stephan's Quintet") == normalise("stephans  quintet")
    assert normalise("MCG +07-02-016") == normalise("MCG+07-02-16") != normalise("MCG -07-02-016")
    catalogue = load_catalogue()
    for spelling in ("M 51", "M51", "messier 51", "NGC 5194", "NGC5194", "ngc 05194", "Whirlpool Galaxy", "PGC 47404"):
        assert catalogue.lookup(spelling).name == "M 51", spelling  # type: ignore[union-attr]
    assert catalogue.lookup("Andromeda Galaxy").name == "M 31"  # type: ignore[union-attr]
    assert catalogue.lookup("Eagle Nebula").name == "M 16"  # type: ignore[union-attr]  # also IC 4703's


# -- the catalogue ----------------------------------------------------------------------------


def test_catalogue_has_all_110_messier_objects_with_sane_coordinates() -> None:
    catalogue = load_catalogue()
    messier = {e.name: e for e in catalogue.entries if e.name.startswith("M ")}
    assert sorted(messier, key=lambda n: int(n[2:])) == [f"M {i}" for i in range(1, 111)]
    for entry in catalogue.entries:
        assert 0.0 <= entry.ra_deg < 360.0 and -90.0 <= entry.dec_deg <= 90.0, entry
        assert entry.major_arcmin >= 0.0
    for name, position in {"M 31": (10.68, 41.27), "M 42": (83.82, -5.39), "M 51": (202.47, 47.20)}.items():
        assert near((messier[name].ra_deg, messier[name].dec_deg), position, 60), name
    assert messier["M 102"].aliases[0] == "NGC 5866"  # SIMBAD's M 102, not OpenNGC's duplicate of M 101
    assert 1000 < len(catalogue) < 5000
