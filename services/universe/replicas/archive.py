"""Replica of esahubble.org / esawebb.org's image archive on 127.0.0.1.

    replica = ArchiveReplica("esahubble", Sky(), cache_dir).start()
    replica.url                      # http://127.0.0.1:PORT
    replica.observations()           # ground truth per id (true WCS, labels, edge cases)
    replica.set_generation(1)        # add / modify / withdraw images between crawls
    replica.count(r"^/images/")      # the request log, from ReplicaServer

Same URL scheme as the real sites (see SITES.md). Admin endpoints for tests and the
demo in another process: ``GET /_replica/truth``, ``GET|POST /_replica/generation``
(``?n=1``), ``GET /_replica/requests`` and ``/_replica/health`` (from ReplicaServer).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from services.universe.replicas import archive_pages as pages
from services.universe.replicas.archive_catalogue import PROFILES, SITES, Observation, cached_base_catalogue
from services.universe.replicas.archive_generations import Changes, apply_generation, generation_date
from services.universe.replicas.archive_http import file_etag, page_etag, respond
from services.universe.replicas.archive_images import FORMATS, ImageStore, ServedSizes
from services.universe.replicas.httpbase import ReplicaServer, Request, Response

if TYPE_CHECKING:
    from services.universe.sky import Sky

HTML = "text/html; charset=utf-8"
JSON = "application/json"
SEARCH_PATH = "/images/archive/search/"
THROTTLED_LISTING_PAGE = 2  # the first request for this search page gets a 429


@dataclass(frozen=True)
class _State:
    generation: int
    observations: tuple[Observation, ...]  # newest first
    changes: Changes
    by_id: dict[str, Observation] = field(default_factory=dict)
    by_file: dict[str, Observation] = field(default_factory=dict)

    @property
    def last_modified(self) -> datetime:
        newest = max(o.modified for o in self.observations)
        return max(newest, generation_date(self.generation)) if self.generation else newest


class ArchiveReplica(ReplicaServer):
    """One ESA archive site (esahubble or esawebb) served from the local sky."""

    def __init__(
        self,
        site: str,
        sky: Sky,
        cache_dir: Path,
        generation: int = 0,
        port: int = 0,
        *,
        screen_width: int = 640,
        large_width: int = 1280,
        publication_width: int | None = None,
        thumb_height: int = 300,
        listing_page_size: int = 25,
        d2d_page_size: int = 40,
        slow_page_s: float = 2.0,
        retry_after_s: int = 1,
        original_max_px: int = 4_000_000,
        jpeg_quality: int = 90,
    ) -> None:
        if site not in SITES:
            raise ValueError(f"unknown site {site!r}: one of {', '.join(SITES)}")
        self.site = site
        self.profile = PROFILES[site]
        self.sky = sky
        self.sizes = ServedSizes(screen_width, large_width, publication_width or large_width, thumb_height)
        self.images = ImageStore(sky, Path(cache_dir), self.sizes, jpeg_quality)
        self.listing_page_size = listing_page_size
        self.d2d_page_size = d2d_page_size
        self.slow_page_s = slow_page_s
        self.retry_after_s = retry_after_s
        self.original_max_px = original_max_px
        super().__init__(site, port=port)
        self._base = cached_base_catalogue(sky, site, Path(cache_dir))
        self._used_sources = {o.source_id for o in self._base if o.source_id}
        self._throttled: set[str] = set()
        self._state_lock = threading.Lock()
        self._bodies: dict[tuple[Any, ...], bytes] = {}  # rendered documents, per generation
        self._state = self._make_state(generation)
        self._register_routes()

    # -- generations ---------------------------------------------------------------------

    @property
    def generation(self) -> int:
        return self._state.generation

    def set_generation(self, n: int) -> Changes:
        """Switch the published set to generation ``n`` (0: the base set); returns what
        generations 1..n changed relative to generation 0."""
        if n < 0:
            raise ValueError("generation must be >= 0")
        state = self._make_state(n)
        with self._state_lock:
            self._state = state
        return state.changes

    def _make_state(self, generation: int) -> _State:
        observations, changes = apply_generation(self.sky, self.site, self._base, generation, set(self._used_sources))
        by_id = {o.id: o for o in observations}
        by_file = {o.file_name: o for o in observations}
        return _State(generation, tuple(observations), changes, by_id, by_file)

    # -- ground truth ----------------------------------------------------------------------

    def observations(self) -> dict[str, dict[str, Any]]:
        """For every published id: true WCS (declared and per served size), title, credit,
        category, dates, sizes, edge cases, expected label values and where to find it."""
        state = self._state
        return {o.id: self._truth_entry(o) for o in state.observations}

    def truth(self) -> dict[str, Any]:
        state = self._state
        observations = self.observations()
        edge_cases: dict[str, list[str]] = {}
        for ident, entry in observations.items():
            for edge in entry["edge_cases"]:
                edge_cases.setdefault(edge, []).append(ident)
        listed = [o for o in state.observations if o.listed_as_observation]
        return {
            "site": self.site,
            "url": self.url,
            "generation": state.generation,
            "listing": {
                "path": SEARCH_PATH,
                "query": f"minimum_size=3&facility={self.profile.facility_id}&type=Observation",
                "page_size": self.listing_page_size,
                "total": len(listed),
                "pages": max(1, -(-len(listed) // self.listing_page_size)),
                "throttled_first_request": f"{SEARCH_PATH}page/{THROTTLED_LISTING_PAGE}/",
            },
            "d2d": {"path": "/images/d2d/", "page_size": self.d2d_page_size, "count": len(state.observations)},
            "robots": {"disallow": list(pages.ROBOTS_DISALLOW)},
            "served_widths": {
                "screen": self.sizes.screen,
                "large": self.sizes.large,
                "publicationjpg": self.sizes.publication,
                "thumb300y": f"height {self.sizes.thumb_height}",
            },
            "slow_page_s": self.slow_page_s,
            "retry_after_s": self.retry_after_s,
            "edge_cases": edge_cases,
            "changes": {
                "added": list(state.changes.added),
                "modified": {k: list(v) for k, v in state.changes.modified.items()},
                "withdrawn": list(state.changes.withdrawn),
            },
            "observations": observations,
        }

    def _truth_entry(self, obs: Observation) -> dict[str, Any]:
        rows = pages.label_rows(obs)
        labels = [[section, label, pages.html_to_text(value)] for section, label, value in rows]
        values: dict[str, str] = {}
        for section, label, text in labels:
            values.setdefault(label if section != "About the Object" or label != "Type:" else "Taxonomy:", text)
        served: dict[str, Any] = {}
        for fmt in (*FORMATS, "original"):
            wcs = self.sizes.wcs(obs, fmt)
            served[fmt] = {
                "url": pages.image_url(self.url, obs, fmt),
                "size": list(self.sizes.size(obs, fmt)),
                "wcs": wcs.header() if wcs else None,
                "status": self._image_status(obs, fmt),
                "embedded_avm": self._embedded_kind(obs, fmt),
            }
        return {
            "id": obs.id,
            "file_name": obs.file_name,
            "type": obs.type,
            "kind": obs.kind,
            "title": obs.title,
            "credit": obs.credit,
            "names": list(obs.names),
            "category": obs.category,
            "taxonomy": list(obs.taxonomy),
            "constellation": obs.constellation,
            "release_date": obs.release.isoformat(),
            "modified": obs.modified.isoformat(),
            "version": obs.version,
            "declared_size": [obs.width, obs.height],
            "listed": obs.listed_as_observation,
            "source_id": obs.source_id,
            "edge_cases": list(obs.edge_cases),
            "defects": asdict(obs.defects),  # black missing-data regions, in fractions of the image
            "wcs": obs.wcs.header() if obs.wcs else None,
            "avm_quality": obs.avm_quality or None,
            "label_wcs": obs.label_wcs.header() if obs.label_wcs else None,
            "labels": labels,
            "label_values": values,
            "page": {
                "path": f"/images/{obs.id}/",
                "json": f"/images/{obs.id}/api/json/",
                "variant": pages.page_variant(obs),
                "slow_s": self.slow_page_s if "slow_page" in obs.edge_cases else 0.0,
                "throttled_first_request": "throttled_429" in obs.edge_cases,
                "malformed": "malformed_html" in obs.edge_cases,
            },
            "served": served,
        }

    def _image_status(self, obs: Observation, fmt: str) -> int:
        if "image_404" in obs.edge_cases:
            return 404
        if fmt == "original" and obs.width * obs.height > self.original_max_px:
            return 404
        return 200

    @staticmethod
    def _embedded_kind(obs: Observation, fmt: str) -> str:
        if fmt == "original" or obs.wcs is None or not obs.avm_quality:
            return "none"
        if obs.avm_quality == "Position":
            return "position"
        return "declared" if obs.embed_original_avm else "served"

    def _memo(self, state: _State, request: Request, build: Callable[[], bytes]) -> bytes:
        """Documents are pure functions of (generation, path, query): build each once."""
        key = (state.generation, request.path, tuple(sorted((k, tuple(v)) for k, v in request.query.items())))
        body = self._bodies.get(key)
        if body is None:
            body = build()
            with self._state_lock:
                if len(self._bodies) > 512:  # bounded: a d2d page is ~70 kB
                    self._bodies.clear()
                self._bodies[key] = body
        return body

    # -- routes ---------------------------------------------------------------------------

    def _register_routes(self) -> None:
        self.routes(
            [
                ("GET", r"/robots\.txt", self._robots),
                ("GET", r"/", self._home),
                ("GET", r"/copyright/", self._copyright),
                ("GET", r"/admin/.*", self._admin),
                ("GET", r"/images/", self._listing),
                ("GET", r"/images/page/(?P<page>\d+)/", self._listing),
                ("GET", r"/images/archive/search/", self._listing),
                ("GET", r"/images/archive/search/page/(?P<page>\d+)/", self._listing),
                ("GET", r"/images/d2d/", self._d2d),
                ("GET", r"/images/(?P<id>[A-Za-z0-9_-]+)/", self._detail),
                ("GET", r"/images/(?P<id>[A-Za-z0-9_-]+)/api/json/", self._json),
                ("GET", r"/archives/images/(?P<fmt>[a-z0-9]+)/(?P<file>[A-Za-z0-9_-]+)\.jpg", self._image),
                ("GET", r"/media/archives/images/original/(?P<file>[A-Za-z0-9_-]+)\.tif", self._original),
                ("GET", r"/_replica/truth", self._truth),
                ("GET", r"/_replica/generation", self._generation),
                ("POST", r"/_replica/generation", self._generation),
            ]
        )

    def _not_found(self) -> Response:
        return Response(404, pages.not_found_page(self.site), content_type=HTML)

    def _throttle(self, path: str) -> Response | None:
        """The first request for a throttled path is answered 429, as a rate limiter does."""
        with self._state_lock:
            if path in self._throttled:
                return None
            self._throttled.add(path)
        body = b"<html><body><h1>429 Too Many Requests</h1></body></html>"
        return Response(429, body, {"Retry-After": str(self.retry_after_s)}, HTML)

    def _robots(self, request: Request) -> Response:
        body = pages.robots_txt()
        return respond(request, body, "text/plain; charset=utf-8", page_etag(body), self._base[-1].release)

    def _home(self, request: Request) -> Response:
        body = pages._page(self.site, pages.SITE_NAMES[self.site], '<h1>Images</h1>\n<a href="/images/">Images</a>\n')
        return respond(request, body, HTML, page_etag(body), self._state.last_modified)

    def _copyright(self, request: Request) -> Response:
        body = pages._page(self.site, "Copyright", f"<h1>Copyright</h1>\n<p>{pages.RIGHTS}</p>\n")
        return respond(request, body, HTML, page_etag(body), self._base[-1].release)

    def _admin(self, request: Request) -> Response:
        body = pages._page(self.site, "Log in", '<h1>Log in</h1>\n<form method="post"></form>\n')
        return Response(200, body, {}, HTML)

    def _listing(self, request: Request) -> Response:
        page = int(request.match.get("page") or 1)
        if request.path.startswith(SEARCH_PATH) and page == THROTTLED_LISTING_PAGE:
            throttled = self._throttle(request.path)
            if throttled:
                return throttled
        state = self._state
        kind = (request.arg("type") or "").lower()
        facility = request.arg("facility")
        entries = [o for o in state.observations if not kind or o.type.lower() == kind]
        if facility and facility.strip() != str(self.profile.facility_id):
            entries = []
        size = self.listing_page_size
        pages_total = max(1, -(-len(entries) // size))
        if page < 1 or page > pages_total:
            return self._not_found()
        chunk = entries[(page - 1) * size : page * size]
        prefix = SEARCH_PATH if request.path.startswith(SEARCH_PATH) else "/images/"
        query = urlencode([(k, v) for k, values in request.query.items() for v in values])

        def link(n: int) -> str:
            return (prefix if n == 1 else f"{prefix}page/{n}/") + (f"?{query}" if query else "")

        body = self._memo(
            state,
            request,
            lambda: pages.listing_page(
                self.site, chunk, page, pages_total, len(entries), (page - 1) * size + 1, self.url, link
            ),
        )
        return respond(request, body, HTML, page_etag(body), state.last_modified)

    def _detail(self, request: Request) -> Response:
        state = self._state
        obs = state.by_id.get(request.match["id"])
        if obs is None:
            return self._not_found()
        if "throttled_429" in obs.edge_cases:
            throttled = self._throttle(request.path)
            if throttled:
                return throttled
        if "slow_page" in obs.edge_cases:
            time.sleep(self.slow_page_s)
        malformed = "malformed_html" in obs.edge_cases
        body = self._memo(state, request, lambda: pages.detail_page(obs, self.url, self.sizes, malformed=malformed))
        return respond(request, body, HTML, page_etag(body), obs.modified)

    def _json(self, request: Request) -> Response:
        state = self._state
        obs = state.by_id.get(request.match["id"])
        if obs is None:
            return Response(404, b'{"detail": "Not found."}', content_type=JSON)
        body = self._memo(state, request, lambda: pages.image_json(obs, self.url, self.sizes))
        return respond(request, body, JSON, page_etag(body), obs.modified)

    def _d2d(self, request: Request) -> Response:
        state = self._state
        entries = list(state.observations)
        after, before = _d2d_date(request.arg("after")), _d2d_date(request.arg("before"))
        if after:
            entries = [o for o in entries if o.release >= after]  # inclusive, as the real feed
        if before:
            entries = [o for o in entries if o.release <= before]
        order = request.arg("order_by") or "-release_date"
        key = order.lstrip("-")
        if key in ("release_date", "id", "title"):
            attr = {"release_date": "release", "id": "id", "title": "title"}[key]
            entries.sort(key=lambda o: (getattr(o, attr), o.id), reverse=order.startswith("-"))
        try:
            size = max(1, int(request.arg("count") or self.d2d_page_size))
            page = int(request.arg("page") or 1)
        except ValueError:
            return Response(404, b'{"detail": "Invalid page."}', content_type=JSON)
        pages_total = max(1, -(-len(entries) // size))
        if page < 1 or page > pages_total:
            return Response(404, b'{"detail": "Invalid page."}', content_type=JSON)
        chunk = entries[(page - 1) * size : page * size]
        params = {k: v[-1] for k, v in request.query.items()}

        def page_url(n: int) -> str:
            query = dict(params, page=str(n)) if n > 1 else {k: v for k, v in params.items() if k != "page"}
            encoded = urlencode(sorted(query.items()))
            return f"{self.url}{request.path}" + (f"?{encoded}" if encoded else "")

        body = self._memo(
            state,
            request,
            lambda: pages.d2d_page(
                [pages.d2d_entry(o, self.url, self.sizes) for o in chunk],
                len(entries),
                page_url(page + 1) if page < pages_total else None,
                page_url(page - 1) if page > 1 else None,
            ),
        )
        return respond(request, body, JSON, page_etag(body), state.last_modified)

    def _image(self, request: Request) -> Response:
        fmt = request.match["fmt"]
        return self._file(request, fmt, "image/jpeg") if fmt in FORMATS else _not_found()

    def _original(self, request: Request) -> Response:
        return self._file(request, "original", "image/tiff")

    def _file(self, request: Request, fmt: str, mime: str) -> Response:
        """An image file at one size, with validators and ranges like the CDN."""
        obs = self._state.by_file.get(request.match["file"])
        if obs is None or self._image_status(obs, fmt) != 200:
            return _not_found()
        body = self.images.get(obs, fmt)
        return respond(
            request,
            body,
            mime,
            file_etag(obs.file_modified, len(body)),
            obs.file_modified,
            ranges=True,
            cache_control="public, max-age=86400",
        )

    # -- admin -------------------------------------------------------------------------------

    def _truth(self, request: Request) -> Response:
        return Response(200, json.dumps(self.truth(), ensure_ascii=False).encode(), content_type=JSON)

    def _generation(self, request: Request) -> Response:
        if request.method == "POST":
            try:
                self.set_generation(int(request.arg("n") or ""))
            except ValueError as exc:
                return Response(400, json.dumps({"error": str(exc)}).encode(), content_type=JSON)
        changes = self._state.changes
        doc = {
            "generation": self.generation,
            "added": list(changes.added),
            "modified": {k: list(v) for k, v in changes.modified.items()},
            "withdrawn": list(changes.withdrawn),
        }
        return Response(200, json.dumps(doc).encode(), content_type=JSON)


def _d2d_date(value: str | None) -> datetime | None:
    """``YYYYMMDDhhmmss`` (or a prefix of it: YYYYMMDD, YYYYMMDDhhmm); None if unusable."""
    if not value or not value.isdigit() or len(value) not in (8, 12, 14):
        return None
    try:
        return datetime.strptime(value, "%Y%m%d%H%M%S"[: {8: 6, 12: 10, 14: 12}[len(value)]])
    except ValueError:
        return None


def _not_found() -> Response:
    return Response(404, b"<html><body><h1>404 Not Found</h1></body></html>", content_type=HTML)
