"""What every replica server shares: a threaded HTTP server on 127.0.0.1, routing
by regular expression, and a request log that tests use to prove caching and
politeness (how many requests, to what, with which headers, answered how)."""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger("prettyspace.replica")


@dataclass(frozen=True)
class Request:
    """One request as the replica saw it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    match: dict[str, str] = field(default_factory=dict)

    def arg(self, name: str, default: str | None = None) -> str | None:
        """A query (or form-encoded body) parameter, case-insensitive like the real services."""
        lowered = {k.lower(): v for k, v in self.query.items()}
        values = lowered.get(name.lower())
        return values[-1] if values else default


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "text/html; charset=utf-8"


@dataclass(frozen=True)
class LoggedRequest:
    time: float
    method: str
    path: str
    query: str
    status: int
    bytes: int
    headers: dict[str, str]


Handler = Callable[[Request], Response]


class _QuietServer(ThreadingHTTPServer):
    """Clients that drop their connection (astroquery does, between calls) are not errors."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class ReplicaServer:
    """Routes ``(method, regex) -> handler``; named groups of the regex reach the
    handler as ``request.match``. Start with ``start()`` (background thread) or
    ``serve_forever()``; ``url`` is its base URL."""

    def __init__(self, name: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self.name = name
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._lock = threading.Lock()
        self.requests: list[LoggedRequest] = []
        self.faults: dict[str, Response] = {}  # path -> the answer it gets instead (see set_fault)
        replica = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes: without this, keep-alive clients wait
            # for a delayed ACK (~40 ms) before each body.
            disable_nagle_algorithm = True
            server_version = f"prettyspace-replica-{name}"

            def do_GET(self) -> None:
                replica._dispatch(self, "GET")

            def do_HEAD(self) -> None:
                replica._dispatch(self, "HEAD")

            def do_POST(self) -> None:
                replica._dispatch(self, "POST")

            def do_DELETE(self) -> None:  # UWS job deletion (pyvo deletes after run_async)
                replica._dispatch(self, "DELETE")

            def log_message(self, format: str, *args: Any) -> None:
                return  # our own request log replaces stderr noise

        self._server = _QuietServer((host, port), _Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None
        # Every replica answers these, for the local stack and for tests in another process.
        self.route("GET", r"/_replica/health", lambda _: Response(200, b"ok", content_type="text/plain"))
        self.route("GET", r"/_replica/requests", self._requests_json)

    # -- routes --------------------------------------------------------------

    def route(self, method: str, pattern: str, handler: Handler) -> None:
        self._routes.append((method, re.compile(pattern + r"\Z"), handler))

    def routes(self, entries: Iterable[tuple[str, str, Handler]]) -> None:
        for method, pattern, handler in entries:
            self.route(method, pattern, handler)

    # -- serving ----------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ReplicaServer:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name=f"replica-{self.name}")
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- request log ------------------------------------------------------------

    def count(self, path_regex: str = ".*", method: str | None = None, status: int | None = None) -> int:
        pattern = re.compile(path_regex)
        with self._lock:
            return sum(
                1
                for r in self.requests
                if pattern.search(r.path)
                and (method is None or r.method == method)
                and (status is None or r.status == status)
            )

    def counts_by_path(self) -> Counter[str]:
        with self._lock:
            return Counter(r.path for r in self.requests)

    def set_fault(self, path: str, response: Response | None) -> None:
        """Answer ``path`` with ``response`` (a 500, undecodable bytes...) until cleared with None."""
        if response is None:
            self.faults.pop(path, None)
        else:
            self.faults[path] = response

    def reset_log(self) -> None:
        with self._lock:
            self.requests.clear()

    def _requests_json(self, _: Request) -> Response:
        with self._lock:
            entries = [asdict(r) for r in self.requests if not r.path.startswith("/_replica/")]
        return Response(200, json.dumps(entries).encode(), content_type="application/json")

    # -- dispatch -----------------------------------------------------------------

    def _dispatch(self, http: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(http.path)
        length = int(http.headers.get("Content-Length") or 0)
        body = http.rfile.read(length) if length else b""
        query = parse_qs(parts.query, keep_blank_values=True)
        if method == "POST" and "form-urlencoded" in (http.headers.get("Content-Type") or ""):
            for key, values in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items():
                query.setdefault(key, []).extend(values)
        headers = {k.lower(): v for k, v in http.headers.items()}
        response = self._handle(method, parts.path, query, headers, body)
        payload = b"" if method == "HEAD" else response.body
        # Logged before the answer leaves, so a client that got its answer finds its entry.
        with self._lock:
            self.requests.append(
                LoggedRequest(time.time(), method, parts.path, parts.query, response.status, len(payload), headers)
            )
        try:
            http.send_response(response.status)
            http.send_header("Content-Type", response.content_type)
            http.send_header("Content-Length", str(len(response.body)))
            for name, value in response.headers.items():
                http.send_header(name, value)
            http.end_headers()
            if payload:
                http.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away (a test's timeout, a cancelled crawl)

    def _handle(
        self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str], body: bytes
    ) -> Response:
        fault = self.faults.get(path)
        if fault is not None:  # a deliberately broken answer, for tests of clients' error handling
            return fault
        allowed = False
        for route_method, pattern, handler in self._routes:
            match = pattern.match(path)
            if not match:
                continue
            allowed = True
            if route_method != method and not (route_method == "GET" and method == "HEAD"):
                continue
            try:
                return handler(Request(method, path, query, headers, body, match.groupdict()))
            except Exception:
                log.exception("replica %s failed on %s %s", self.name, method, path)
                return Response(500, b"internal error in the replica", content_type="text/plain")
        if allowed:
            return Response(HTTPStatus.METHOD_NOT_ALLOWED, b"method not allowed", content_type="text/plain")
        return Response(HTTPStatus.NOT_FOUND, b"<html><body><h1>404 Not Found</h1></body></html>")
