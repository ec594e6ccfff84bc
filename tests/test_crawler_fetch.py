"""The crawler's HTTP rules, through a real Playwright request context against a real
HTTP server on 127.0.0.1 (the replica base server): robots.txt, Retry-After, retries
with backoff, timeouts, conditional requests, charset errors, rate limit."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from services.crawler.browser import browser_available, open_browser
from services.crawler.fetch import Fetcher, FetchError, FetchPolicy, retry_after_s
from services.universe.replicas.httpbase import ReplicaServer, Request, Response

pytestmark = pytest.mark.skipif(
    not browser_available(), reason="Debian's chromium is not installed (.ci/run installs it)"
)

ROBOTS = b"User-agent: *\nDisallow: /private/\n\nUser-agent: BadBot\nDisallow: /\n"


class Site(ReplicaServer):
    def __init__(self) -> None:
        super().__init__("fetch-test")
        self.hits: dict[str, int] = {}
        self.routes(
            [
                ("GET", r"/robots\.txt", lambda r: Response(200, ROBOTS, content_type="text/plain")),
                ("GET", r"/page", self._page),
                ("GET", r"/private/x", lambda r: Response(200, b"secret", content_type="text/plain")),
                ("GET", r"/flaky", self._flaky),
                ("GET", r"/slow", self._slow),
                (
                    "GET",
                    r"/latin1",
                    lambda r: Response(200, "caf\xe9".encode("latin-1"), content_type="text/html; charset=utf-8"),
                ),
            ]
        )

    def _page(self, request: Request) -> Response:
        if request.headers.get("if-none-match") == '"v1"':
            return Response(304, b"", {"ETag": '"v1"'})
        return Response(200, b"<p>hello</p>", {"ETag": '"v1"'}, "text/html; charset=utf-8")

    def _flaky(self, request: Request) -> Response:
        n = self.hits["flaky"] = self.hits.get("flaky", 0) + 1
        return (
            Response(503, b"busy", content_type="text/plain")
            if n < 3
            else Response(200, b"ok", content_type="text/plain")
        )

    def _slow(self, request: Request) -> Response:
        time.sleep(1.5)
        return Response(200, b"late", content_type="text/plain")


@pytest.fixture(scope="module")
def site():
    server = Site().start()
    yield server
    server.stop()


def run(policy: FetchPolicy, body: Callable[[Fetcher], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async with open_browser(policy.user_agent, 1) as browser:
            return await body(Fetcher(browser.request, policy))

    return asyncio.run(main())


FAST = FetchPolicy(user_agent="PrettierSpaceSurvey-test/1.0", rate_per_host=0, timeout_s=5, retries=3, backoff_s=0.05)


def test_robots_disallow_is_obeyed_without_requesting_the_page(site: Site) -> None:
    site.reset_log()

    async def body(f: Fetcher) -> None:
        assert (await f.get(f"{site.url}/page", "detail")).status == 200
        with pytest.raises(FetchError) as err:
            await f.get(f"{site.url}/private/x", "image")
        assert err.value.kind == "robots" and "/private/x" in str(err.value)

    run(FAST, body)
    assert site.count(r"^/private/") == 0
    assert site.count(r"^/robots\.txt$") == 1  # fetched once per origin
    # the project's User-Agent is what the site saw
    assert all(r.headers.get("user-agent") == FAST.user_agent for r in site.requests)


def test_a_user_agent_disallowed_everywhere_fetches_nothing(site: Site) -> None:
    site.reset_log()

    async def body(f: Fetcher) -> None:
        with pytest.raises(FetchError, match="robots"):
            await f.get(f"{site.url}/page", "detail")

    run(FetchPolicy(user_agent="BadBot", rate_per_host=0), body)
    assert site.count(r"^/page") == 0


def test_retry_after_is_waited_out(site: Site) -> None:
    def limited(request: Request) -> Response:
        n = site.hits["limited"] = site.hits.get("limited", 0) + 1
        if n == 1:
            return Response(429, b"slow down", {"Retry-After": "1"}, "text/plain")
        return Response(200, b"fine", content_type="text/plain")

    site.route("GET", r"/limited", limited)
    site.reset_log()

    async def body(f: Fetcher) -> float:
        start = time.monotonic()
        fetched = await f.get(f"{site.url}/limited", "listing")
        assert fetched.body == b"fine"
        return time.monotonic() - start

    elapsed = run(FAST, body)
    statuses = [r.status for r in site.requests if r.path == "/limited"]
    assert statuses == [429, 200]
    assert elapsed >= 1.0  # the second request came after Retry-After, not after the 50 ms backoff


def test_5xx_is_retried_with_backoff_then_succeeds(site: Site) -> None:
    site.hits.clear()

    async def body(f: Fetcher) -> bytes:
        return (await f.get(f"{site.url}/flaky", "json")).body

    assert run(FAST, body) == b"ok"
    assert site.hits["flaky"] == 3


def test_retries_are_bounded_and_the_error_names_the_url(site: Site) -> None:
    site.set_fault("/down", Response(500, b"oops", content_type="text/plain"))
    site.reset_log()

    async def body(f: Fetcher) -> None:
        with pytest.raises(FetchError) as err:
            await f.get(f"{site.url}/down", "detail")
        assert err.value.kind == "http_5xx" and err.value.status == 500 and f"{site.url}/down" in str(err.value)

    run(FAST, body)
    assert site.count(r"^/down$") == FAST.retries + 1


def test_timeout_per_request(site: Site) -> None:
    async def body(f: Fetcher) -> None:
        with pytest.raises(FetchError) as err:
            await f.get(f"{site.url}/slow", "detail")
        assert err.value.kind == "timeout"

    run(FetchPolicy(user_agent="t", rate_per_host=0, timeout_s=0.3, retries=1, backoff_s=0.01), body)


def test_conditional_request_gives_304_without_body(site: Site) -> None:
    async def body(f: Fetcher) -> None:
        first = await f.get(f"{site.url}/page", "detail")
        again = await f.get(f"{site.url}/page", "detail", first.validators)
        assert first.validators == {"etag": '"v1"'}
        assert again.not_modified and again.body == b""

    run(FAST, body)


def test_undecodable_page_is_a_decode_error(site: Site) -> None:
    async def body(f: Fetcher) -> None:
        fetched = await f.get(f"{site.url}/latin1", "detail")
        with pytest.raises(FetchError) as err:
            fetched.text()
        assert err.value.kind == "decode" and "/latin1" in str(err.value)

    run(FAST, body)


def test_rate_limit_spaces_requests_to_one_host(site: Site) -> None:
    site.reset_log()

    async def body(f: Fetcher) -> None:
        await asyncio.gather(*(f.get(f"{site.url}/page", "detail") for _ in range(6)))

    run(FetchPolicy(user_agent="t", rate_per_host=10), body)
    times = sorted(r.time for r in site.requests if r.path == "/page")
    # 10 requests/s: six requests leave over >= 500 ms. They arrive with the client's own
    # jitter, so allow 150 ms of it (without a limit all six arrive within a few ms).
    assert len(times) == 6 and times[-1] - times[0] >= 0.35


def test_retry_after_http_date() -> None:
    now = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)
    assert retry_after_s("120") == 120
    assert retry_after_s(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == pytest.approx(30)
    assert retry_after_s(format_datetime(now - timedelta(seconds=30), usegmt=True), now) == 0
    assert retry_after_s("soon") is None and retry_after_s(None) is None


def test_a_page_that_never_finishes_is_an_error_and_the_tab_is_replaced() -> None:
    async def main() -> dict:
        async with open_browser("t", 1, page_timeout_s=1.0) as browser:
            with pytest.raises(FetchError) as err:
                await browser.parse_detail("<h1>x</h1><script>while (true) {}</script>", "http://127.0.0.1/hang/")
            assert err.value.kind == "page_timeout" and "/hang/" in str(err.value)
            # the one tab of the pool was replaced: the next page is read normally
            return await browser.parse_detail("<h1>Fine</h1>", "http://127.0.0.1/ok/")

    assert asyncio.run(main())["title"] == "Fine"
