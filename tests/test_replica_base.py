"""The shared replica HTTP server: routing, HEAD, errors, and the request log."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from services.universe.replicas.httpbase import ReplicaServer, Request, Response


@pytest.fixture
def server() -> Iterator[ReplicaServer]:
    replica = ReplicaServer("test")

    def hello(request: Request) -> Response:
        return Response(200, f"hello {request.match['name']} {request.arg('X', '-')}".encode())

    def boom(_: Request) -> Response:
        raise RuntimeError("bug")

    def echo(request: Request) -> Response:
        return Response(200, f"x={request.arg('x')}".encode())

    replica.routes([("GET", r"/hello/(?P<name>\w+)", hello), ("GET", r"/boom", boom), ("POST", r"/form", echo)])
    replica.start()
    yield replica
    replica.stop()


def fetch(url: str, method: str = "GET", data: bytes | None = None) -> tuple[int, bytes, dict[str, str]]:
    request = urllib.request.Request(url, method=method, data=data)
    if data is not None:
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def test_routes_queries_and_head(server: ReplicaServer) -> None:
    assert fetch(f"{server.url}/hello/vega?x=1")[:2] == (200, b"hello vega 1")
    status, body, headers = fetch(f"{server.url}/hello/vega", method="HEAD")
    assert (status, body, headers["Content-Length"]) == (200, b"", "12")


def test_errors_are_http_errors_not_crashes(server: ReplicaServer) -> None:
    assert fetch(f"{server.url}/nowhere")[0] == 404
    assert fetch(f"{server.url}/hello/vega", method="POST", data=b"")[0] == 405
    assert fetch(f"{server.url}/boom")[0] == 500
    assert fetch(f"{server.url}/_replica/health")[:2] == (200, b"ok")


def test_request_log_counts_and_is_served(server: ReplicaServer) -> None:
    fetch(f"{server.url}/hello/a")
    fetch(f"{server.url}/hello/b")
    assert fetch(f"{server.url}/form", method="POST", data=b"x=2")[:2] == (200, b"x=2")
    assert server.count(r"^/hello/") == 2 and server.count(r"^/hello/a$", status=200) == 1
    logged = json.loads(fetch(f"{server.url}/_replica/requests")[1])
    assert [entry["path"] for entry in logged] == ["/hello/a", "/hello/b", "/form"]
    server.reset_log()
    assert server.count() == 0
