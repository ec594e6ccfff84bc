"""Polite HTTP through the browser context's request API: robots.txt, a per-host
rate limit, conditional requests, retries with exponential backoff that honour
Retry-After, and errors that say which URL failed and how.

Everything the crawler downloads goes through ``Fetcher.get``; the browser itself
never touches the network (its pages only parse what was fetched here), so these
rules cannot be bypassed by a page loading a sub-resource.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from protego import Protego

from services.runtime.logs import fields

if TYPE_CHECKING:
    from playwright.async_api import APIRequestContext

log = logging.getLogger(__name__)
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class FetchPolicy:
    user_agent: str
    rate_per_host: float = 1.0  # requests per second per host; 0: no limit
    timeout_s: float = 30.0
    retries: int = 4
    backoff_s: float = 1.0
    max_retry_after_s: float = 300.0
    max_body_bytes: int = 200 * 1024 * 1024


class FetchError(Exception):
    """A URL that could not be fetched; ``kind`` is a metric label, the message is for a person."""

    def __init__(self, url: str, kind: str, message: str, status: int = 0) -> None:
        super().__init__(f"{url}: {message}")
        self.url = url
        self.kind = kind  # http_404, http_4xx, http_5xx, http_429, timeout, network, robots, too_large
        self.status = status

    def record(self) -> dict[str, Any]:
        return {"url": self.url, "kind": self.kind, "status": self.status, "message": str(self)}


@dataclass
class Fetched:
    url: str
    status: int  # 200 or 304 (anything else raises FetchError)
    headers: dict[str, str]
    body: bytes

    @property
    def not_modified(self) -> bool:
        return self.status == 304

    @property
    def validators(self) -> dict[str, str]:
        return {
            k: self.headers[h] for k, h in (("etag", "etag"), ("last_modified", "last-modified")) if h in self.headers
        }

    def text(self) -> str:
        """The body as text: the declared charset or UTF-8; undecodable bytes are an error."""
        charset = "utf-8"
        for part in self.headers.get("content-type", "").split(";")[1:]:
            name, _, value = part.strip().partition("=")
            if name.lower() == "charset" and value:
                charset = value.strip("\"'")
        try:
            return self.body.decode(charset)
        except (UnicodeDecodeError, LookupError) as exc:
            raise FetchError(self.url, "decode", f"not valid {charset} text ({exc})", self.status) from exc


@dataclass
class _HostClock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    next_at: float = 0.0


class HostLimiter:
    """At most ``rate`` requests a second to each host, and a shared pause when a host
    answers 429 with Retry-After (every request to that host waits it out)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._hosts: dict[str, _HostClock] = {}

    async def wait(self, host: str) -> None:
        clock = self._hosts.setdefault(host, _HostClock())
        async with clock.lock:
            delay = clock.next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            clock.next_at = max(clock.next_at, time.monotonic()) + self.interval

    def pause(self, host: str, seconds: float) -> None:
        clock = self._hosts.setdefault(host, _HostClock())
        clock.next_at = max(clock.next_at, time.monotonic() + seconds)


def retry_after_s(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class Fetcher:
    """GETs through one Playwright APIRequestContext (the browser's cookies and identity)."""

    def __init__(
        self,
        request: APIRequestContext,
        policy: FetchPolicy,
        on_response: Callable[[str, int, int], None] | None = None,
    ) -> None:
        self.request = request
        self.policy = policy
        self.limiter = HostLimiter(policy.rate_per_host)
        self._robots: dict[str, Protego | None] = {}
        self._robots_locks: dict[str, asyncio.Lock] = {}
        self.on_response = on_response or (lambda kind, status, size: None)
        self.requests = 0

    # -- robots.txt -----------------------------------------------------------------

    async def allowed(self, url: str) -> bool:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        lock = self._robots_locks.setdefault(origin, asyncio.Lock())
        async with lock:
            if origin not in self._robots:
                self._robots[origin] = await self._load_robots(origin)
        rules = self._robots[origin]
        if rules is None:  # robots.txt unreachable (5xx): RFC 9309 says assume full disallow
            return False
        return rules.can_fetch(url, self.policy.user_agent)

    async def _load_robots(self, origin: str) -> Protego | None:
        url = f"{origin}/robots.txt"
        try:
            fetched = await self._get(url, {}, "robots", check_robots=False)
        except FetchError as exc:
            if exc.kind in ("http_404", "http_4xx"):
                return Protego.parse("")  # no robots.txt: everything allowed
            return None
        return Protego.parse(fetched.body.decode("utf-8", "replace"))

    # -- GET --------------------------------------------------------------------------

    async def get(self, url: str, kind: str, validators: dict[str, str] | None = None) -> Fetched:
        """GET ``url`` (``kind`` labels metrics: listing, detail, json, feed, image).
        With validators, a conditional request: status 304 means unchanged, no body."""
        headers: dict[str, str] = {}
        if validators:
            if validators.get("etag"):
                headers["If-None-Match"] = validators["etag"]
            if validators.get("last_modified"):
                headers["If-Modified-Since"] = validators["last_modified"]
        return await self._get(url, headers, kind, check_robots=True)

    async def _get(self, url: str, headers: dict[str, str], kind: str, *, check_robots: bool) -> Fetched:
        if check_robots and not await self.allowed(url):
            raise FetchError(url, "robots", "disallowed by robots.txt")
        host = urlsplit(url).netloc
        policy = self.policy
        attempt = 0
        while True:
            await self.limiter.wait(host)
            self.requests += 1
            log.debug("requesting", extra=fields(url=url, attempt=attempt))
            try:
                response = await self.request.get(
                    url,
                    headers=headers,
                    timeout=policy.timeout_s * 1000,
                    fail_on_status_code=False,
                    max_redirects=5,
                )
                status = response.status
                response_headers = {k.lower(): v for k, v in response.headers.items()}
                body = b"" if status == 304 else await response.body()
                await response.dispose()
            except Exception as exc:  # Playwright raises plain Error for timeouts and socket errors
                message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                log.info("request failed", extra=fields(url=url, error=message, attempt=attempt))
                error = FetchError(url, "timeout" if "Timeout" in message else "network", message)
                self.on_response(kind, 0, 0)
                if attempt >= policy.retries:
                    raise error from exc
                await asyncio.sleep(self._backoff(attempt))
                attempt += 1
                continue
            self.on_response(kind, status, len(body))
            log.debug("fetched", extra=fields(url=url, status=status, bytes=len(body), attempt=attempt))
            if status in (200, 304):
                if len(body) > policy.max_body_bytes:
                    raise FetchError(url, "too_large", f"{len(body)} bytes > limit {policy.max_body_bytes}", status)
                return Fetched(url, status, response_headers, body)
            if status in RETRY_STATUSES and attempt < policy.retries:
                wait = retry_after_s(response_headers.get("retry-after"))
                if wait is not None:
                    wait = min(wait, policy.max_retry_after_s)
                    self.limiter.pause(host, wait)  # the whole host is told to slow down
                else:
                    await asyncio.sleep(self._backoff(attempt))
                attempt += 1
                continue
            raise FetchError(url, _status_kind(status), f"HTTP {status}", status)

    def _backoff(self, attempt: int) -> float:
        base = self.policy.backoff_s * (2**attempt)
        return base * (0.5 + random.random() / 2)  # jitter: retries of many pages do not align


def _status_kind(status: int) -> str:
    if status == 404 or status == 410:
        return "http_404"
    if status == 429:
        return "http_429"
    if status >= 500:
        return "http_5xx"
    return "http_4xx"
