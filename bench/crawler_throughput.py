"""Throughput, recrawl cost and memory of the crawler service on the archive replicas.

What one run measures (the full version; ``--quick`` does esahubble only, at
concurrency 4 only, with 200-px screen images, as a smoke test):

1. pages/s of a full *first* crawl of both sites at PSS_CRAWL_CONCURRENCY 1 and 4
   (rate limit off), each into an empty store: a fresh object store and a fresh
   crawler process per measurement. Pages = listing + feed + JSON + detail pages
   (from the replicas' request log, checked against the job's ``pages`` counter);
   only the "screen" size is downloaded. Time from StartCrawl to SUCCEEDED as the
   client sees it, and the crawl's own time (the service's
   ``crawl_duration_seconds``: no browser launch, no job pick-up).
2. A plain-HTTP baseline in the same run: the very same URLs (taken from the first
   crawl's request log) fetched with ``http.client`` keep-alive connections at the
   same concurrency (a ThreadPoolExecutor for the items; listing and feed pages one
   after the other, as the crawler walks them), parsed minimally with the standard
   library (a regex for the listing's script ids, ``json`` for the JSON and feed,
   ``html.parser`` for the detail page's rows). The ratio crawler/baseline is how
   many times longer the crawler takes for the same pages (browser, Playwright's
   request API, S3 writes, checkpoints, AVM and JPEG work all included).
3. Requests of an unchanged full recrawl (conditional requests) and of an unchanged
   incremental recrawl, as a fraction of the first crawl's (goal: incremental <= 5 %).
4. Memory of the crawler service process plus all its descendants (Playwright's
   node driver and every Chromium process), sampled every 0.1 s with psutil: RSS
   during the throughput crawls (cheap to read), and RSS/PSS/USS
   (``memory_full_info``, which reads smaps and costs CPU) during one more crawl of
   its own at concurrency 4, so the costly sampling does not slow the timed crawls;
   the idle service before its first crawl for comparison.

Kept out of the figures on purpose: the replicas run in a child process (their
threads do not share the benchmark client's interpreter lock), every page and
screen JPEG is requested once before any timing (the replica renders images and
builds documents lazily, then serves them from its caches), which also uses up the
replicas' one-time 429 answers; the replica's artificially slow page is off
(slow_page_s=0). The machine's CPU count is in the results: on a small machine the
crawler, its browser, the object store and the replicas share few cores.
"""

from __future__ import annotations

import asyncio
import html.parser
import http.client
import json
import re
import statistics
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

from bench.common import MIB, ChildServer, summarize, table
from deploy.localstack.stack import REPO_ROOT, Stack
from services.api import common_pb2, crawler_pb2
from services.client.clients import CrawlerClient
from services.crawler.sites import profile
from tests.support.processes import ServiceProcess, service_process

SOURCES = ("esahubble", "esawebb")
ENUM = {"esahubble": crawler_pb2.SOURCE_ESAHUBBLE, "esawebb": crawler_pb2.SOURCE_ESAWEBB}
CONCURRENCY = (1, 4)
PAGE_KINDS = ("listing", "feed", "json", "detail")
KINDS = ("robots", *PAGE_KINDS, "image", "other")
SAMPLE_S = 0.1
IDLE_S = 2.0
CACHE_DIR = REPO_ROOT / ".cache" / "universe"  # shared with the tests: rendered images survive runs
USER_AGENT = "PrettierSpaceSurvey-bench/1.0"
_LISTING_ID = re.compile(r"^\s*id:\s*'([^']+)'", re.M)


def _kind(path: str) -> str:
    if path == "/robots.txt":
        return "robots"
    if path.startswith("/images/archive/search/"):
        return "listing"
    if path.startswith("/images/d2d/"):
        return "feed"
    if path.startswith("/archives/images/"):
        return "image"
    if re.fullmatch(r"/images/[A-Za-z0-9_-]+/api/json/", path):
        return "json"
    if re.fullmatch(r"/images/[A-Za-z0-9_-]+/", path):
        return "detail"
    return "other"


# -- the replicas, in a child process ------------------------------------------------------


def _serve(pipe: Any, sites: tuple[str, ...], cache_dir: str, screen_width: int) -> None:
    """Child process: one replica per site; answers commands from the parent over ``pipe``."""
    from services.universe.replicas.archive import ArchiveReplica
    from services.universe.sky import Sky

    replicas = {
        s: ArchiveReplica(
            s, Sky(), Path(cache_dir), screen_width=screen_width, large_width=2 * screen_width, slow_page_s=0.0
        ).start()
        for s in sites
    }
    try:
        pipe.send({s: r.url for s, r in replicas.items()})
        while True:
            command = pipe.recv()
            if command == "stop":
                break
            if command == "truth":
                pipe.send({s: r.truth() for s, r in replicas.items()})
            elif command == "reset_log":
                for r in replicas.values():
                    r.reset_log()
                pipe.send(None)
            elif command == "log":
                pipe.send(
                    {
                        s: [
                            {
                                "path": q.path,
                                "query": q.query,
                                "status": q.status,
                                "bytes": q.bytes,
                                "conditional": "if-none-match" in q.headers or "if-modified-since" in q.headers,
                            }
                            for q in list(r.requests)
                            if not q.path.startswith("/_replica/")
                        ]
                        for s, r in replicas.items()
                    }
                )
    finally:
        for r in replicas.values():
            r.stop()


class _Replicas(ChildServer):
    """The archive replicas in a child process."""

    def __init__(self, sites: tuple[str, ...], screen_width: int) -> None:
        super().__init__(_serve, (sites, str(CACHE_DIR), screen_width), "replicas")
        self.urls: dict[str, str] = self.hello


def _urlopen(url: str) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    for attempt in range(3):
        try:
            with urllib.request.urlopen(request, timeout=600) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 429 and attempt < 2:  # the replica's one-time 429: used up here, not in a crawl
                continue
            if exc.code == 404:
                return b""
            raise
    raise RuntimeError(f"{url}: still 429")


def _warm(urls: dict[str, str], truth: dict[str, Any]) -> dict[str, Any]:
    """Request every page, feed page and screen JPEG once (renders and caches them)."""
    started = time.perf_counter()
    page_urls: list[str] = []
    image_urls: list[str] = []
    for source, base in urls.items():
        t = truth[source]
        site = profile(source, base)
        page_urls.append(site.robots_url())
        page_urls += [site.search_url(n) for n in range(1, t["listing"]["pages"] + 1)]
        for ident, obs in t["observations"].items():
            page_urls += [site.detail_url(ident), site.json_url(ident)]
            if obs["served"]["screen"]["status"] == 200:
                image_urls.append(obs["served"]["screen"]["url"])
        feed: str | None = site.feed_url()
        while feed:
            feed = json.loads(_urlopen(feed)).get("Next")
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(_urlopen, page_urls))
        rendered = time.perf_counter()
        list(pool.map(_urlopen, image_urls))
    return {
        "pages": len(page_urls),
        "images": len(image_urls),
        "pages_s": rendered - started,
        "images_s": time.perf_counter() - rendered,
    }


def _log_summary(log: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    by_kind: dict[str, dict[str, int]] = {k: {} for k in KINDS}
    conditional = 0
    for entries in log.values():
        for e in entries:
            statuses = by_kind[_kind(e["path"])]
            statuses[str(e["status"])] = statuses.get(str(e["status"]), 0) + 1
            conditional += e["conditional"]
    requests = sum(sum(s.values()) for s in by_kind.values())
    pages = sum(s.get("200", 0) + s.get("304", 0) for k, s in by_kind.items() if k in PAGE_KINDS)
    return {
        "requests": requests,
        "pages": pages,
        "conditional": conditional,
        "bytes": sum(e["bytes"] for entries in log.values() for e in entries),
        "by_kind": {k: s for k, s in by_kind.items() if s},
    }


# -- the crawler process and its memory -------------------------------------------------------


class _Crawler:
    """A crawler service process on a stack; ``stop()`` also kills any descendant left behind."""

    def __init__(self, stack: Stack, log_dir: Path, name: str, urls: dict[str, str], concurrency: int) -> None:
        settings = {f"{s}_url": u for s, u in urls.items()}
        self.service: ServiceProcess = service_process(
            stack,
            ["services", "crawler"],
            log_dir,
            name,
            crawl_rate_per_host="0",
            crawl_concurrency=str(concurrency),
            crawl_sizes="screen",
            log_level="warning",
            **settings,
        )
        self.root: psutil.Process | None = None
        self.seen: dict[int, psutil.Process] = {}
        self._lock = threading.Lock()

    def start(self) -> _Crawler:
        self.service.start(timeout_s=60)
        assert self.service.proc is not None
        self.root = psutil.Process(self.service.proc.pid)
        return self

    @property
    def address(self) -> str:
        return self.service.address

    def tree(self) -> list[psutil.Process]:
        if self.root is None:
            return []
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        with self._lock:
            for p in procs:
                self.seen.setdefault(p.pid, p)
        return procs

    def metric_sum(self, name: str) -> float:
        url = f"http://127.0.0.1:{self.service.metrics_port}/metrics"
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        return sum(float(m) for m in re.findall(rf"^{name}_sum\{{[^}}]*\}} (\S+)$", text, re.M))

    def stop(self) -> list[str]:
        """Stop the service, then kill whatever of its process tree survived it (orphaned
        Chromium or node processes); returns a description of what had to be killed."""
        self.tree()
        self.service.stop()
        with self._lock:
            procs = list(self.seen.values())
        root_pid = self.root.pid if self.root else -1
        leftovers = [p for p in procs if p.pid != root_pid and _alive(p)]
        described = []
        for p in leftovers:
            try:
                described.append(f"{p.pid} {p.name()} (parent {p.ppid()})")
                p.kill()  # psutil checks the create time: a reused pid is never signalled
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(leftovers, timeout=10)
        return described


def _alive(p: psutil.Process) -> bool:
    """Running and not a zombie (Chromium's orphans are reparented to PID 1, which reaps them a little later)."""
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _memory(procs: list[psutil.Process], full: bool) -> dict[str, float]:
    totals = {"rss": 0.0, "pss": 0.0, "uss": 0.0, "processes": 0.0}
    for p in procs:
        try:
            if full:
                info = p.memory_full_info()
                totals["pss"] += info.pss / MIB
                totals["uss"] += info.uss / MIB
            else:
                info = p.memory_info()
            totals["rss"] += info.rss / MIB
            totals["processes"] += 1
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    if not full:
        del totals["pss"], totals["uss"]
    return totals


class _Sampler(threading.Thread):
    """Peak memory of a crawler's process tree, every SAMPLE_S seconds until stopped."""

    def __init__(self, crawler: _Crawler, full: bool) -> None:
        super().__init__(daemon=True, name="memory-sampler")
        self.crawler = crawler
        self.full = full
        self.done = threading.Event()
        self.peak: dict[str, float] = {}
        self.samples = 0
        self.sample_s: list[float] = []

    def run(self) -> None:
        while True:
            started = time.perf_counter()
            current = _memory(self.crawler.tree(), self.full)
            self.sample_s.append(time.perf_counter() - started)
            self.samples += 1
            for k, v in current.items():
                self.peak[k] = max(self.peak.get(k, 0.0), v)
            if self.done.wait(max(0.0, SAMPLE_S - (time.perf_counter() - started))):
                return

    def result(self) -> dict[str, Any]:
        self.done.set()
        self.join(timeout=30)
        return {
            "peak_mib": self.peak,
            "samples": self.samples,
            "sample_ms_mean": 1000 * statistics.fmean(self.sample_s) if self.sample_s else 0.0,
        }


# -- crawls ---------------------------------------------------------------------------------------


def _crawl(
    crawler: _Crawler, replicas: _Replicas, sources: tuple[str, ...], incremental: bool, sample: str
) -> dict[str, Any]:
    """One crawl job, start to SUCCEEDED; ``sample``: "" (no memory sampling), "rss" or "full" (the
    sampler also records every process of the tree, so that ``_Crawler.stop`` finds orphans)."""
    replicas.call("reset_log")
    duration_before = crawler.metric_sum("prettyspace_crawler_crawl_duration_seconds")
    sampler = _Sampler(crawler, sample == "full") if sample else None
    if sampler:
        sampler.start()
    try:
        started = time.perf_counter()
        with CrawlerClient(crawler.address) as client:
            request = crawler_pb2.StartCrawlRequest(sources=[ENUM[s] for s in sources], incremental=incremental)
            job = client.stub.StartCrawl(request, timeout=30)
            final = client.jobs.follow(job.id, timeout_s=1800)
        wall_s = time.perf_counter() - started
    finally:
        memory = sampler.result() if sampler else None
    if final.state != common_pb2.JOB_STATE_SUCCEEDED:
        raise RuntimeError(f"crawl {final.id} ended {final.state}: {final.error}\n{crawler.service.log()[-3000:]}")
    descendants_after = len(crawler.tree()) - 1
    log = _log_summary(replicas.call("log"))
    crawl_s = crawler.metric_sum("prettyspace_crawler_crawl_duration_seconds") - duration_before
    job_s = (final.finished.ToDatetime() - final.created.ToDatetime()).total_seconds()
    counters = dict(final.progress.counters)
    return {
        "sources": list(sources),
        "incremental": incremental,
        "wall_s": wall_s,
        "job_s": job_s,
        "crawl_s": crawl_s,
        "pages_per_s": log["pages"] / wall_s,
        "pages_per_crawl_s": log["pages"] / crawl_s if crawl_s else None,
        "log": log,
        "counters": {
            k: counters.get(k, 0) for k in ("pages", "requests", "bytes", "images", "new", "skipped", "errors")
        },
        "memory": memory,
        "descendants_after_crawl": descendants_after,
    }


def _with_crawler(
    urls: dict[str, str], concurrency: int, work: Any, log_dir: Path, name: str, idle_full: bool
) -> dict[str, Any]:
    """A fresh object store and crawler process; ``work(crawler)`` -> dict; everything stopped after."""
    with tempfile.TemporaryDirectory(prefix="pss-bench-crawl-", ignore_cleanup_errors=True) as tmp:
        stack = Stack.ephemeral(Path(tmp), services=(), with_triton=False, with_replicas=False)
        crawler: _Crawler | None = None
        try:
            stack.start(timeout_s=120)
            crawler = _Crawler(stack, log_dir, name, urls, concurrency).start()
            time.sleep(IDLE_S)
            idle = _memory(crawler.tree(), idle_full)
            result = work(crawler)
            result["idle_memory_mib"] = idle
            return result
        finally:
            killed = crawler.stop() if crawler else []
            stack.stop()
            if killed:
                print(f"({name}: killed leftover processes {killed})", flush=True)


# -- the plain-HTTP baseline --------------------------------------------------------------------------


class _Rows(html.parser.HTMLParser):
    """The label rows of a detail page: [[section, label, value], ...] of div.object-info tables."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[list[str]] = []
        self.title = ""
        self._section = ""
        self._text: list[str] | None = None
        self._cells: list[str] = []
        self._where = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("h1", "h3", "th", "td"):
            self._text, self._where = [], tag
        elif tag == "tr":
            self._cells = []

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == self._where and self._text is not None:
            text = " ".join("".join(self._text).split())
            if tag == "h1":
                self.title = text
            elif tag == "h3":
                self._section = text
            else:
                self._cells.append(text)
            self._text, self._where = None, ""
        elif tag == "tr" and len(self._cells) >= 2:
            self.rows.append([self._section, self._cells[0], self._cells[1]])


class _Http:
    """Keep-alive ``http.client`` connections, one per thread and host."""

    def __init__(self) -> None:
        self.local = threading.local()

    def get(self, url: str) -> tuple[int, bytes]:
        parts = urlsplit(url)
        conns = self.local.__dict__.setdefault("conns", {})
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        for attempt in range(2):
            conn = conns.get(parts.netloc)
            if conn is None:
                conn = conns[parts.netloc] = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
            try:
                conn.request("GET", target, headers={"User-Agent": USER_AGENT})
                response = conn.getresponse()
                body = response.read()
            except (http.client.HTTPException, OSError):
                conn.close()
                del conns[parts.netloc]
                if attempt:
                    raise
                continue
            if response.getheader("Connection", "").lower() == "close":
                conn.close()
                del conns[parts.netloc]
            return response.status, body
        raise AssertionError("unreachable")


def _plan(
    urls: dict[str, str], truth: dict[str, Any], log: dict[str, list[dict[str, Any]]]
) -> dict[str, dict[str, Any]]:
    """The URLs of the crawler's first crawl, per site: listing pages in order, the feed's
    first page, and per listed id its JSON, its page and the screen JPEG it fetched."""
    plan: dict[str, dict[str, Any]] = {}
    for source, base in urls.items():
        fetched = {e["path"] + (f"?{e['query']}" if e["query"] else "") for e in log[source]}
        listing = [base + p for p in dict.fromkeys(p for p in fetched if _kind(urlsplit(p).path) == "listing")]
        listing.sort(key=lambda u: int(re.search(r"/page/(\d+)/", u).group(1)) if "/page/" in u else 1)  # type: ignore[union-attr]
        images = {}
        for ident, obs in truth[source]["observations"].items():
            url = obs["served"]["screen"]["url"]
            if urlsplit(url).path in fetched:
                images[ident] = url
        feeds = [base + p for p in dict.fromkeys(p for p in fetched if _kind(urlsplit(p).path) == "feed")]
        site = profile(source, base)
        ids = [i for i, o in truth[source]["observations"].items() if urlsplit(site.detail_url(i)).path in fetched]
        plan[source] = {
            "robots": site.robots_url(),
            "listing": listing,
            "feed": site.feed_url(),
            "feeds": feeds,
            "ids": ids,
            "images": images,
        }
    return plan


def _baseline(plan: dict[str, dict[str, Any]], concurrency: int) -> dict[str, Any]:
    client = _Http()
    counts = dict.fromkeys(KINDS, 0)
    pages = requests = nbytes = rows = 0
    lock = threading.Lock()

    def fetch(url: str, kind: str) -> bytes:
        nonlocal requests, nbytes, pages
        status, body = client.get(url)
        with lock:
            requests += 1
            nbytes += len(body)
            counts[kind] += 1
            if kind in PAGE_KINDS and status == 200:
                pages += 1
        return body if status == 200 else b""

    def item(source: str, ident: str) -> None:
        nonlocal rows
        site = profile(source, plan[source]["robots"].removesuffix("/robots.txt"))
        doc = json.loads(fetch(site.json_url(ident), "json") or b"{}")
        parser = _Rows()
        parser.feed(fetch(site.detail_url(ident), "detail").decode("utf-8", "replace"))
        parser.close()
        url = plan[source]["images"].get(ident)
        if url:
            fetch(url, "image")
        with lock:
            rows += len(parser.rows) + bool(doc)

    started = time.perf_counter()
    listed = 0
    with ThreadPoolExecutor(concurrency) as pool:
        for source, p in plan.items():
            fetch(p["robots"], "robots")
            ids: list[str] = []
            for url in p["listing"]:
                ids += _LISTING_ID.findall(fetch(url, "listing").decode())
            listed += len(ids)
            feed: str | None = p["feed"]
            while feed:
                feed = json.loads(fetch(feed, "feed")).get("Next")
            list(pool.map(lambda ident, source=source: item(source, ident), ids))
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "pages": pages,
        "requests": requests,
        "bytes": nbytes,
        "listed": listed,
        "rows_parsed": rows,
        "by_kind": {k: v for k, v in counts.items() if v},
        "pages_per_s": pages / seconds,
    }


# -- where the crawler's time goes: Playwright's request API and Chromium's parsing alone ----------------


def _plan_urls(plan: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """(kind, url) of every request of the plan, in the crawler's order."""
    urls: list[tuple[str, str]] = []
    for source, p in plan.items():
        site = profile(source, p["robots"].removesuffix("/robots.txt"))
        urls += [("robots", p["robots"]), *(("listing", u) for u in p["listing"]), *(("feed", u) for u in p["feeds"])]
        for ident in p["ids"]:
            urls += [("json", site.json_url(ident)), ("detail", site.detail_url(ident))]
            if ident in p["images"]:
                urls.append(("image", p["images"][ident]))
    return urls


async def _browser_parts_async(plan: dict[str, dict[str, Any]], concurrency: int) -> dict[str, Any]:
    from services.crawler.browser import open_browser

    urls = _plan_urls(plan)
    started = time.perf_counter()
    async with open_browser(USER_AGENT, concurrency) as browser:
        launch_s = time.perf_counter() - started
        limit = asyncio.Semaphore(concurrency)

        async def get(kind: str, url: str) -> tuple[str, str, bytes]:
            async with limit:
                response = await browser.request.get(url, fail_on_status_code=False)
                body = await response.body()
                await response.dispose()
                return kind, url, body

        started = time.perf_counter()
        fetched = await asyncio.gather(*(get(k, u) for k, u in urls))
        fetch_s = time.perf_counter() - started
        html_pages = [(k, u, b.decode()) for k, u, b in fetched if k in ("listing", "detail")]

        async def parse(kind: str, url: str, text: str) -> Any:
            return await (browser.parse_listing if kind == "listing" else browser.parse_detail)(text, url)

        started = time.perf_counter()
        parsed = await asyncio.gather(*(parse(*page) for page in html_pages))
        parse_s = time.perf_counter() - started
    started = time.perf_counter()
    for kind, _, text in html_pages:  # the same pages, parsed by the standard library
        if kind == "listing":
            _LISTING_ID.findall(text)
        else:
            parser = _Rows()
            parser.feed(text)
            parser.close()
    stdlib_parse_s = time.perf_counter() - started
    return {
        "launch_s": launch_s,
        "requests": len(urls),
        "fetch_s": fetch_s,
        "html_pages": len(html_pages),
        "parse_s": parse_s,
        "parse_ms_per_page": 1000 * parse_s / max(1, len(html_pages)),
        "stdlib_parse_s": stdlib_parse_s,
        "stdlib_parse_ms_per_page": 1000 * stdlib_parse_s / max(1, len(html_pages)),
        "rows_parsed": sum(len(p.get("rows") or []) for p in parsed if isinstance(p, dict)),
    }


def _browser_parts(plan: dict[str, dict[str, Any]], concurrency: int) -> dict[str, Any]:
    return asyncio.run(_browser_parts_async(plan, concurrency))


# -- the benchmark ---------------------------------------------------------------------------------------


def run(quick: bool = False) -> dict[str, Any]:
    sources = SOURCES[:1] if quick else SOURCES
    concurrencies = (4,) if quick else CONCURRENCY
    screen_width = 200 if quick else 640
    baseline_repeats = 1 if quick else 3
    results: dict[str, Any] = {
        "sources": list(sources),
        "screen_width": screen_width,
        "concurrency": list(concurrencies),
        "sample_s": SAMPLE_S,
    }
    log_dir = Path(tempfile.mkdtemp(prefix="pss-bench-crawler-logs-"))
    replicas = _Replicas(sources, screen_width)
    try:
        truth = replicas.call("truth")
        results["warmup"] = _warm(replicas.urls, truth)
        results["listed"] = {s: truth[s]["listing"]["total"] for s in sources}

        crawls: dict[str, Any] = {}
        first_log: dict[str, list[dict[str, Any]]] = {}
        for c in concurrencies:
            last = c == concurrencies[-1]

            def work(crawler: _Crawler, last: bool = last) -> dict[str, Any]:
                nonlocal first_log
                out = {"first": _crawl(crawler, replicas, sources, False, "full" if quick else "rss")}
                if not first_log:
                    first_log = replicas.call("log")
                if last:  # the unchanged recrawls, on the store this first crawl filled
                    out["full_recrawl"] = _crawl(crawler, replicas, sources, False, "rss")
                    out["incremental_recrawl"] = _crawl(crawler, replicas, sources, True, "rss")
                return out

            crawls[str(c)] = _with_crawler(replicas.urls, c, work, log_dir, f"crawler-c{c}", idle_full=quick)
        results["crawls"] = crawls
        if quick:
            results["memory"] = crawls["4"]["first"]["memory"] | {"idle_mib": crawls["4"]["idle_memory_mib"]}
        else:  # one more first crawl, with the costly RSS/PSS/USS sampling
            mem = _with_crawler(
                replicas.urls,
                4,
                lambda crawler: {"first": _crawl(crawler, replicas, sources, False, "full")},
                log_dir,
                "crawler-memory",
                idle_full=True,
            )
            results["memory"] = mem["first"]["memory"] | {
                "idle_mib": mem["idle_memory_mib"],
                "pages": mem["first"]["log"]["pages"],
                "wall_s": mem["first"]["wall_s"],
            }

        plan = _plan(replicas.urls, truth, first_log)
        baseline: dict[str, list[dict[str, Any]]] = {str(c): [] for c in concurrencies}
        _baseline(plan, max(concurrencies))  # warm-up, discarded
        for _ in range(baseline_repeats):
            for c in concurrencies:
                baseline[str(c)].append(_baseline(plan, c))
        results["parts"] = {str(c): _browser_parts(plan, c) for c in concurrencies}
        replicas.call("reset_log")
        results["baseline"] = {
            c: {
                **min(runs, key=lambda r: abs(r["seconds"] - statistics.median(x["seconds"] for x in runs))),
                "seconds_summary": summarize([r["seconds"] for r in runs]),
            }
            for c, runs in baseline.items()
        }
    finally:
        replicas.stop()

    for c in map(str, concurrencies):
        first, base = results["crawls"][c]["first"], results["baseline"][c]
        results["crawls"][c]["vs_baseline"] = {
            "time_ratio": first["wall_s"] / base["seconds_summary"]["median"],
            "crawl_time_ratio": first["crawl_s"] / base["seconds_summary"]["median"],
            "same_pages": first["log"]["pages"] == base["pages"],
        }
    last = results["crawls"][str(concurrencies[-1])]
    first_requests = last["first"]["log"]["requests"]
    results["recrawl"] = {
        name: {
            "requests": last[name]["log"]["requests"],
            "fraction": last[name]["log"]["requests"] / first_requests,
            "wall_s": last[name]["wall_s"],
            "by_kind": last[name]["log"]["by_kind"],
        }
        for name in ("full_recrawl", "incremental_recrawl")
    }
    results["log_dir"] = str(log_dir)
    return results


def render(r: dict[str, Any]) -> str:
    rows = []
    for c in map(str, r["concurrency"]):
        first = r["crawls"][c]["first"]
        base = r["baseline"][c]
        rows.append(
            [
                f"crawler c={c}",
                first["log"]["pages"],
                first["log"]["requests"],
                first["wall_s"],
                first["crawl_s"],
                first["pages_per_s"],
                first["pages_per_crawl_s"],
                r["crawls"][c]["vs_baseline"]["time_ratio"],
            ]
        )
        rows.append(
            [f"plain HTTP c={c}", base["pages"], base["requests"], base["seconds"], "", base["pages_per_s"], "", 1.0]
        )
    headers = ["first crawl", "pages", "requests", "wall s", "crawl s", "pages/s", "pages/crawl s", "x baseline"]
    recrawl_rows = [
        [
            name.replace("_", " "),
            v["requests"],
            f"{100 * v['fraction']:.1f} %",
            v["wall_s"],
            ", ".join(f"{k} {'/'.join(f'{n}x{s}' for s, n in sorted(st.items()))}" for k, st in v["by_kind"].items()),
        ]
        for name, v in r["recrawl"].items()
    ]
    m = r["memory"]
    idle = m["idle_mib"]
    mem_rows = [
        [
            "idle service (before a crawl)",
            idle["rss"],
            idle.get("pss", ""),
            idle.get("uss", ""),
            int(idle["processes"]),
        ],
        [
            "peak during the crawl",
            m["peak_mib"]["rss"],
            m["peak_mib"].get("pss", ""),
            m["peak_mib"].get("uss", ""),
            int(m["peak_mib"]["processes"]),
        ],
    ]
    rss_rows = [
        [f"peak RSS, crawl c={c}", r["crawls"][c]["first"]["memory"]["peak_mib"]["rss"]]
        for c in map(str, r["concurrency"])
        if r["crawls"][c]["first"]["memory"]
    ]
    parts_rows = [
        [
            f"c={c}",
            p["launch_s"],
            p["requests"],
            p["fetch_s"],
            r["baseline"][c]["seconds"],
            p["parse_ms_per_page"],
            p["stdlib_parse_ms_per_page"],
            r["crawls"][c]["first"]["crawl_s"],
        ]
        for c, p in r.get("parts", {}).items()
    ]
    parts_headers = [
        "",
        "launch s",
        "requests",
        "Playwright fetch s",
        "plain HTTP s",
        "Chromium parse ms/page",
        "html.parser ms/page",
        "crawl s",
    ]
    w = r["warmup"]
    return "\n".join(
        [
            f"Crawler on the archive replicas ({', '.join(r['sources'])}; {sum(r['listed'].values())} listed;"
            f" screen JPEGs {r['screen_width']} px; rate limit off), a full first crawl into an empty store",
            "(wall s: StartCrawl to SUCCEEDED; crawl s: the service's crawl_duration_seconds, no browser launch;"
            " pages: listing+feed+JSON+detail; x baseline: crawler wall s / plain-HTTP s for the same URLs)",
            table(headers, rows),
            "",
            "Where the time goes, the same URLs: Chromium launch; all requests through Playwright's request API alone"
            " (no parsing; plain HTTP s includes its parsing); listing+detail pages parsed by set_content+evaluate"
            " vs by the standard library",
            table(parts_headers, parts_rows),
            "",
            f"Unchanged recrawls (c={r['concurrency'][-1]}), requests vs the first crawl's"
            f" {r['crawls'][str(r['concurrency'][-1])]['first']['log']['requests']} (goal incremental <= 5 %)",
            table(["recrawl", "requests", "of first", "wall s", "by kind (count x status)"], recrawl_rows),
            "",
            f"Crawler memory, MiB, service process + all descendants (node driver, Chromium), sampled every"
            f" {r['sample_s']} s ({m['samples']} samples, {m['sample_ms_mean']:.0f} ms each), c=4 first crawl",
            table(["", "RSS", "PSS", "USS", "procs"], mem_rows),
            table(["throughput crawls", "RSS"], rss_rows),
            f"(warm-up before timing: {w['pages']} pages in {w['pages_s']:.1f} s, {w['images']} screen JPEGs in"
            f" {w['images_s']:.1f} s)",
        ]
    )
