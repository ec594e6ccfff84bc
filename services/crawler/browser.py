"""One headless Chromium per crawl, driven by Playwright.

Pages are fetched by ``fetch.Fetcher`` (through this browser context's request API)
and handed to a browser page with ``set_content``: Chromium parses the HTML the way
a visitor's browser does (malformed markup included) and runs the listing's inline
script, whose image array is data, not links. Pages never load anything
themselves: every network request a page would make is aborted, so images are
downloaded once, by the fetcher, under its robots/rate-limit rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

from playwright.async_api import Browser, BrowserContext, Page, async_playwright
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import TimeoutError as PlaywrightTimeout

from services.crawler.fetch import FetchError

# Debian installs the real binary beside a wrapper script; launching the binary skips the wrapper's noise.
CHROMIUM_CANDIDATES = ("/usr/lib/chromium/chromium", "/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMIUM_FLAGS = (
    "--no-sandbox",  # containers run without the user namespaces the sandbox needs
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",  # no calls home: the crawler's traffic is all ours
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


class BrowserUnavailable(RuntimeError):
    pass


def chromium_path(configured: str = "") -> str:
    """The Chromium binary: the configured one, else ("" or "auto") Debian's."""
    if configured and configured != "auto":
        if not os.access(configured, os.X_OK):
            raise BrowserUnavailable(f"PSS_CHROMIUM_PATH={configured} is not an executable file")
        return configured
    for candidate in CHROMIUM_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("chromium")
    if found:
        return found
    raise BrowserUnavailable(
        "no Chromium found: install Debian's package (apt-get install chromium) or set PSS_CHROMIUM_PATH"
    )


_LISTING_JS = """() => {
  const content = document.querySelector('#content') || document.body;
  let images = (typeof window.images !== 'undefined' && Array.isArray(window.images)) ? window.images : null;
  if (images === null) {
    // The array may be named differently: evaluate the first array literal of an inline script.
    for (const script of content.querySelectorAll('script')) {
      const m = script.textContent.match(/=\\s*(\\[[\\s\\S]*\\])\\s*;?\\s*$/m);
      if (m) { try { images = Function('"use strict"; return (' + m[1] + ');')(); break; } catch (e) {} }
    }
  }
  const numbers = [...document.querySelectorAll('ul.pagination li')]
    .map(li => parseInt(li.textContent.trim(), 10)).filter(n => !isNaN(n));
  const summary = [...document.querySelectorAll('div.col-md-3')].map(d => d.textContent.trim()).join(' ');
  const total = summary.match(/(\\d[\\d,]*)\\s*$/);
  return {
    images: images === null ? null : images.map(o => Object.fromEntries(Object.entries(o).map(([k, v]) => [k, v]))),
    page_count: numbers.length ? Math.max(...numbers) : null,
    total: total ? parseInt(total[1].replace(/,/g, ''), 10) : null,
  };
}"""

_DETAIL_JS = """() => {
  const clean = s => (s || '').replace(/\\s+/g, ' ').trim();
  const h1 = document.querySelector('h1');
  const credit = document.querySelector('div.credit');
  const rows = [];
  for (const box of document.querySelectorAll('div.object-info')) {
    const h3 = box.querySelector('h3');
    for (const tr of box.querySelectorAll('tr')) {
      const cells = tr.querySelectorAll('th, td');
      if (cells.length >= 2) rows.push([clean(h3 && h3.textContent), clean(cells[0].textContent),
                                        clean(cells[1].textContent)]);
    }
  }
  const downloads = [...document.querySelectorAll('div.archive_download a[href]')]
    .map(a => [clean(a.textContent), a.getAttribute('href')]);
  return {title: clean(h1 && h1.textContent), credit: clean(credit && credit.textContent), rows, downloads};
}"""


class CrawlBrowser:
    """A pool of ``pages`` tabs in one browser context; ``parse_*`` borrow a tab each."""

    def __init__(self, context: BrowserContext, pages: list[Page]) -> None:
        self.context = context
        self._pages: asyncio.Queue[Page] = asyncio.Queue()
        for page in pages:
            self._pages.put_nowait(page)

    @property
    def request(self) -> Any:
        return self.context.request

    async def _evaluate(self, html: str, base_url: str, script: str) -> dict[str, Any]:
        page = await self._pages.get()
        try:
            await page.set_content(html, wait_until="domcontentloaded")
            return await page.evaluate(script)
        except PlaywrightError as exc:  # a timeout, a crashed tab: this page fails, the crawl goes on
            # The tab may be stuck (a script that never ends): a fresh one takes its place.
            stuck, page = page, await self.context.new_page()
            asyncio.get_running_loop().create_task(_close_quietly(stuck))
            kind = "page_timeout" if isinstance(exc, PlaywrightTimeout) else "page"
            raise FetchError(base_url, kind, f"Chromium could not read the page: {exc.message}") from exc
        finally:
            self._pages.put_nowait(page)

    async def parse_listing(self, html: str, url: str) -> dict[str, Any]:
        """{"images": [ {id, title, ...} ] | None, "page_count": int | None, "total": int | None}"""
        return await self._evaluate(html, url, _LISTING_JS)

    async def parse_detail(self, html: str, url: str) -> dict[str, Any]:
        """The PageData of the crawler contract: title, credit, rows [[section, label, value]], downloads
        (hrefs made absolute against the page's URL)."""
        data = await self._evaluate(html, url, _DETAIL_JS)
        data["downloads"] = [[label, urljoin(url, href or "")] for label, href in data["downloads"]]
        return data


async def _close_quietly(page: Page) -> None:
    with contextlib.suppress(PlaywrightError):
        await page.close(run_before_unload=False)


@asynccontextmanager
async def open_browser(
    user_agent: str, pages: int, executable: str = "", page_timeout_s: float = 30.0
) -> AsyncIterator[CrawlBrowser]:
    binary = chromium_path(executable)
    async with async_playwright() as playwright:
        browser: Browser = await playwright.chromium.launch(
            executable_path=binary, args=list(CHROMIUM_FLAGS), headless=True
        )
        try:
            context = await browser.new_context(
                user_agent=user_agent, java_script_enabled=True, service_workers="block"
            )
            # A page that takes longer than this to parse is an error, not a stuck crawl.
            context.set_default_timeout(page_timeout_s * 1000)
            # Pages parse, they never fetch: the fetcher is the only way out.
            await context.route("**/*", lambda route: route.abort())
            tabs = [await context.new_page() for _ in range(max(1, pages))]
            yield CrawlBrowser(context, tabs)
            await context.close()
        finally:
            await browser.close()


def browser_available(executable: str = "") -> bool:
    try:
        return Path(chromium_path(executable)).exists()
    except BrowserUnavailable:
        return False
