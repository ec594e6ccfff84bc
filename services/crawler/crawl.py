"""The crawl job: list a site's observations, extract each one's metadata, store
its images, and remember what was seen.

One job crawls one or more sources with one browser. For each source:

1. listing — walk the search pages of Observation-type images (conditional
   requests; a page answering 304 reuses the ids stored with its validators);
2. feed — walk the ``d2d`` feed and digest each image's entry: an incremental run
   only visits the items whose entry changed (or that are new), which is what
   keeps an unchanged recrawl to a handful of requests;
3. items — per image: the JSON document (AVM) and the detail page (labels),
   conditionally against the validators stored in its ``meta.json``; extraction
   only when one of them changed; each configured image size conditionally
   against the stored object's validators; ``meta.json`` written last;
4. withdrawn — ids of the previous run missing from a complete listing are
   confirmed gone (404) and their ``meta.json`` marked withdrawn, never deleted;
5. commit — ``state.json`` and the run report.

A checkpoint (every few seconds and at each phase end) holds the listing and the
outcome of every finished item, with the counters at that moment: a resumed
attempt continues from there; items finished after the checkpoint are visited
again but answer 304 against what they stored, so nothing is fetched twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from PIL import Image

from services.crawler import extract as ex
from services.crawler import metrics
from services.crawler.avm import max_offset_px
from services.crawler.browser import CrawlBrowser, open_browser
from services.crawler.fetch import Fetched, Fetcher, FetchError, FetchPolicy
from services.crawler.sites import SiteProfile
from services.crawler.state import ARCHIVE, BUCKET, CrawlState, image_key, meta_key, now_iso
from services.runtime.jobs import JobContext
from services.runtime.logs import fields
from services.runtime.objectstore import ObjectNotFound

log = logging.getLogger(__name__)

OUTCOMES = ("new", "changed", "unchanged", "skipped", "withdrawn", "error")
MAX_ERRORS_KEPT = 2000
EMBEDDED_AVM_TOLERANCE_PX = 1.0


@dataclass(frozen=True)
class CrawlSettings:
    policy: FetchPolicy
    sizes: tuple[str, ...] = ("screen", "large")
    concurrency: int = 4
    chromium: str = ""
    excluded_types: tuple[str, ...] = ex.EXCLUDED_TYPES_DEFAULT
    min_fov_arcmin: float = ex.MIN_FOV_ARCMIN_DEFAULT
    checkpoint_every_s: float = 2.0


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]


class CrawlRun:
    """One attempt of a crawl job; ``run()`` does every source not finished yet."""

    def __init__(
        self,
        ctx: JobContext,
        sites: list[SiteProfile],
        settings: CrawlSettings,
        incremental: bool,
        max_pages: int,
    ) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.sites = sites
        self.settings = settings
        self.incremental = incremental
        self.max_pages = max_pages
        self.cp: dict[str, Any] = ctx.checkpoint() or {"sources": {}, "errors": []}
        if ctx.checkpoint() is not None and "counters" in self.cp:
            ctx.set_counters(self.cp["counters"])  # what was counted after the checkpoint is redone
        self._last_cp = time.monotonic()
        self._source = ""
        self.item_errors: dict[str, list[str]] = {}  # kinds of the errors of items in progress

    # -- bookkeeping ----------------------------------------------------------------------

    def count(self, name: str, n: int = 1) -> None:
        if n:
            self.ctx.count(name, n)

    def error(self, err: FetchError | dict[str, Any], image_id: str = "") -> None:
        record = err.record() if isinstance(err, FetchError) else dict(err)
        record.update(source=self._source, id=image_id, at=now_iso())
        if image_id:
            self.item_errors.setdefault(image_id, []).append(record.get("kind", "other"))
        errors = self.cp.setdefault("errors", [])
        if len(errors) < MAX_ERRORS_KEPT:
            errors.append(record)
        self.count("errors")
        metrics.ERRORS.labels(self._source, record.get("kind", "other")).inc()
        log.warning("crawl error", extra=fields(job_id=self.ctx.job_id, **record))

    def save_checkpoint(self, force: bool = False) -> None:
        if force or time.monotonic() - self._last_cp >= self.settings.checkpoint_every_s:
            self.cp["counters"] = self.ctx.counters()
            self.ctx.save_checkpoint(self.cp)
            self._last_cp = time.monotonic()

    def _on_response(self, kind: str, status: int, size: int) -> None:
        metrics.REQUESTS.labels(self._source, kind, str(status)).inc()
        if size:
            metrics.BYTES.labels(self._source, kind).inc(size)
            self.count("bytes", size)
        self.count("requests")
        if status == 304:
            self.count("not_modified")
        if kind in ("listing", "detail", "json", "feed") and status in (200, 304):
            metrics.PAGES.labels(self._source, kind).inc()
            self.count("pages")

    # -- the job ----------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        settings = self.settings
        async with open_browser(
            settings.policy.user_agent, settings.concurrency, settings.chromium, settings.policy.timeout_s
        ) as browser:
            fetcher = Fetcher(browser.request, settings.policy, self._on_response)
            for site in self.sites:
                progress = self.cp["sources"].setdefault(site.source, {"phase": "listing"})
                if progress["phase"] == "done":
                    continue
                self._source = site.source
                started = time.monotonic()
                await SourceCrawl(self, site, browser, fetcher, progress).run()
                metrics.DURATION.labels(site.source, "incremental" if self.incremental else "full").observe(
                    time.monotonic() - started
                )
        counters = self.ctx.counters()
        return {k: counters.get(k, 0) for k in (*OUTCOMES, "pages", "requests", "bytes", "errors")}


class SourceCrawl:
    def __init__(
        self, run: CrawlRun, site: SiteProfile, browser: CrawlBrowser, fetcher: Fetcher, progress: dict[str, Any]
    ) -> None:
        self.run_ = run
        self.ctx = run.ctx
        self.store = run.store
        self.site = site
        self.browser = browser
        self.fetcher = fetcher
        self.p = progress  # this source's part of the checkpoint (mutated in place)
        self.state = CrawlState.load(self.store, site.source)

    # -- phases ------------------------------------------------------------------------------

    async def run(self) -> None:
        if self.p["phase"] == "listing":
            self.ctx.progress(stage=f"{self.site.source}: listing")
            await self.list_pages()
            self.p["phase"] = "feed"
            self.run_.save_checkpoint(force=True)
        if self.p["phase"] == "feed":
            self.ctx.progress(stage=f"{self.site.source}: feed")
            await self.walk_feed()
            self.p["phase"] = "items"
            self.run_.save_checkpoint(force=True)
        if self.p["phase"] == "items":
            await self.crawl_items()
            self.p["phase"] = "withdrawn"
            self.run_.save_checkpoint(force=True)
        if self.p["phase"] == "withdrawn":
            await self.find_withdrawn()
            self.commit()
            self.p["phase"] = "done"
            self.run_.save_checkpoint(force=True)

    # -- 1. listing ----------------------------------------------------------------------------

    async def _listing_page(self, n: int, conditional: bool) -> dict[str, Any] | None:
        """{"ids": [...], "entries": {...}, "page_count", "total", validators} or None past the end."""
        url = self.site.search_url(n)
        known = self.state.listing.get("pages", {}).get(str(n)) if conditional else None
        try:
            fetched = await self.fetcher.get(url, "listing", known)
        except FetchError as exc:
            if exc.kind == "http_404":
                return None  # past the last page
            raise
        if fetched.not_modified and known:
            return {"total": None, "page_count": n, **known, "entries": {i: {"id": i} for i in known["ids"]}}
        parsed = await self.browser.parse_listing(fetched.text(), url)
        if parsed["images"] is None:
            raise FetchError(url, "parse", "no image array in the listing page's inline script", fetched.status)
        entries = {str(e["id"]): e for e in parsed["images"] if e.get("id")}
        return {
            "ids": list(entries),
            "entries": entries,
            "page_count": parsed["page_count"] or n,
            "total": parsed["total"],
            **fetched.validators,
        }

    async def _walk_listing(self, conditional: bool) -> dict[str, Any]:
        """One walk over the search pages; the page count is re-read on every page."""
        run = self.run_
        walk: dict[str, Any] = {"ids": [], "entries": {}, "pages": {}, "complete": True, "totals": set()}
        n, page_count = 1, 1
        while n <= page_count:
            if run.max_pages and n > run.max_pages:
                walk["complete"] = False
                break
            self.ctx.check()
            try:
                page = await self._listing_page(n, conditional)
            except FetchError as exc:
                run.error(exc)
                walk["complete"] = False
                n += 1
                continue
            if page is None:
                break
            page_count = max(page["page_count"], n)
            if page["total"] is not None:
                walk["totals"].add(page["total"])
            walk["pages"][str(n)] = {
                k: page[k] for k in ("ids", "etag", "last_modified", "page_count", "total") if k in page
            }
            for ident in page["ids"]:
                if ident not in walk["entries"]:
                    walk["ids"].append(ident)
                walk["entries"][ident] = {**walk["entries"].get(ident, {}), **page["entries"][ident]}
            self.ctx.progress(message=f"{self.site.source}: listing page {n}/{page_count}")
            n += 1
        return walk

    async def list_pages(self) -> None:
        """Walk every search page (or the first max_pages). A walk is consistent when every
        page reported the same total and that many distinct ids were read; when the site
        changed during the walk (ids shift between pages) it is walked again from page 1,
        without validators. After three inconsistent walks, the last two are merged and
        the listing counts as incomplete (no withdrawal is concluded from it)."""
        previous: dict[str, Any] | None = None
        for attempt in range(3):
            walk = await self._walk_listing(conditional=attempt == 0)
            totals = walk["totals"]
            consistent = len(totals) <= 1 and (not totals or len(walk["ids"]) == next(iter(totals)))
            if not walk["complete"] or consistent:
                break
            log.info(
                "listing changed while walking it: walking it again",
                extra=fields(job_id=self.ctx.job_id, totals=sorted(totals), ids=len(walk["ids"])),
            )
            previous = walk
        else:
            assert previous is not None
            for ident in previous["ids"]:
                if ident not in walk["entries"]:
                    walk["ids"].append(ident)
                    walk["entries"][ident] = previous["entries"][ident]
            walk["complete"] = False
        self.p["listing"] = {
            "ids": walk["ids"],
            "entries": {i: _listing_fields(walk["entries"][i]) for i in walk["ids"]},
            "pages": walk["pages"],
            "complete": walk["complete"],
            "total": max(walk["totals"]) if walk["totals"] else None,
        }

    # -- 2. feed ---------------------------------------------------------------------------------

    async def walk_feed(self) -> None:
        """Digest every entry of the d2d feed (following ``Next``); 304 pages reuse stored digests."""
        stored = self.state.feed.get("pages", {})
        pages: dict[str, Any] = {}
        digests: dict[str, str] = {}
        url: str | None = self.site.feed_url()
        seen: set[str] = set()
        ok = True
        while url and url not in seen:
            self.ctx.check()
            seen.add(url)
            known = stored.get(url)
            try:
                fetched = await self.fetcher.get(url, "feed", known)
            except FetchError as exc:
                self.run_.error(exc)
                ok = False
                break
            if fetched.not_modified and known:
                pages[url] = known
                digests.update(known["digests"])
                url = known.get("next")
                continue
            try:
                doc = json.loads(fetched.text())
                collections = doc.get("Collections") or []
            except (ValueError, AttributeError) as exc:
                self.run_.error({"url": url, "kind": "parse", "status": fetched.status, "message": f"bad JSON: {exc}"})
                ok = False
                break
            page_digests = {str(e["ID"]): _digest(e) for e in collections if isinstance(e, dict) and e.get("ID")}
            digests.update(page_digests)
            pages[url] = {**fetched.validators, "digests": page_digests, "next": doc.get("Next")}
            url = doc.get("Next")
        self.p["feed"] = {"pages": pages, "digests": digests, "complete": ok}

    # -- 3. items ----------------------------------------------------------------------------------

    def _targets(self) -> list[str]:
        listing = self.p["listing"]
        done = self.p.setdefault("done", {})
        digests = self.p["feed"]["digests"]
        targets = []
        for ident in listing["ids"]:
            if ident in done:
                continue
            prev = self.state.items.get(ident)
            if (
                self.run_.incremental
                and prev
                and prev.get("status") in ("active", "skipped")
                and prev.get("feed_digest")
                and prev["feed_digest"] == digests.get(ident)
            ):
                # The feed says nothing changed: no request at all for this item.
                outcome = "skipped" if prev["status"] == "skipped" else "unchanged"
                done[ident] = {**_result(prev), "outcome": outcome, "visited": False}
                self.run_.count(outcome)
                metrics.ITEMS.labels(self.site.source, outcome).inc()
                continue
            targets.append(ident)
        return targets

    async def crawl_items(self) -> None:
        targets = self._targets()
        done = self.p["done"]
        total_items = len(self.p["listing"]["ids"])
        self.ctx.progress(stage=f"{self.site.source}: items", done=len(done), total=total_items)
        queue: asyncio.Queue[str] = asyncio.Queue()
        for ident in targets:
            queue.put_nowait(ident)

        async def worker() -> None:
            while True:
                try:
                    ident = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                self.ctx.check()
                result = await self.process(ident)
                done[ident] = result
                self.run_.count(result["outcome"])
                metrics.ITEMS.labels(self.site.source, result["outcome"]).inc()
                self.ctx.progress(done=len(done), message=f"{self.site.source}/{ident}: {result['outcome']}")
                self.run_.save_checkpoint()

        workers = [asyncio.create_task(worker()) for _ in range(self.run_.settings.concurrency)]
        try:
            await asyncio.gather(*workers)
        finally:
            for task in workers:
                task.cancel()

    async def process(self, ident: str) -> dict[str, Any]:
        """One image: metadata (conditional), images (conditional), meta.json last."""
        site, store = self.site, self.store
        prev = self.state.items.get(ident)
        existing = await asyncio.to_thread(_load_meta, store, site.source, ident)
        validators: dict[str, Any] = {}
        if existing and not existing.get("withdrawn"):
            validators = existing.get("validators", {})
        elif prev and prev.get("status") == "skipped":
            validators = prev.get("validators", {})  # not usable last time: unchanged means still not
        try:
            json_f = await self.fetcher.get(site.json_url(ident), "json", validators.get("json"))
            page_f = await self.fetcher.get(site.detail_url(ident), "detail", validators.get("page"))
        except FetchError as exc:
            self.run_.error(exc, ident)
            return {"outcome": "error", "error": str(exc), "feed_digest": None}
        if json_f.not_modified and page_f.not_modified and not existing and prev and prev.get("status") == "skipped":
            return {
                "outcome": "skipped",
                "skip_reason": prev.get("skip_reason"),
                "validators": validators,
                **self._feed(ident),
            }
        reextracted = not (existing and json_f.not_modified and page_f.not_modified)
        if reextracted:
            try:
                if json_f.not_modified:
                    json_f = await self.fetcher.get(site.json_url(ident), "json")
                if page_f.not_modified:
                    page_f = await self.fetcher.get(site.detail_url(ident), "detail")
            except FetchError as exc:
                self.run_.error(exc, ident)
                return {"outcome": "error", "error": str(exc), "feed_digest": None}
            json_doc = self._json(json_f, ident)
            page_data = await self._page(page_f, ident)
            if json_doc is None and page_data is None:
                return {"outcome": "error", "error": "neither the JSON nor the page could be read"}
            if existing and not existing.get("withdrawn") and (json_doc is None or page_data is None):
                # Half the metadata is unreadable today: keep what is stored rather than degrade it.
                return {"outcome": "error", "error": "the JSON or the page could not be read; stored metadata kept"}
            extracted = ex.extract(
                site.source,
                ident,
                site.detail_url(ident),
                json_doc,
                page_data,
                self.p["listing"]["entries"].get(ident),
                excluded_types=self.run_.settings.excluded_types,
                min_fov_arcmin=self.run_.settings.min_fov_arcmin,
            )
            if extracted.meta is None:
                page_validators = {"json": json_f.validators, "page": page_f.validators}
                return {
                    "outcome": "skipped",
                    "skip_reason": extracted.skip_reason,
                    "validators": page_validators,
                    **self._feed(ident),
                }
            meta = extracted.meta
            meta["json_url"] = site.json_url(ident)
        else:
            assert existing is not None
            meta = {k: v for k, v in existing.items() if k not in ("images", "validators", "crawled_at")}
        images, images_changed = await self._images(ident, meta, existing, reextracted)
        meta["images"] = images
        meta["validators"] = {
            "json": json_f.validators or validators.get("json", {}),
            "page": page_f.validators or validators.get("page", {}),
        }
        meta["withdrawn"] = False
        meta["withdrawn_at"] = None
        if existing is None or reextracted or images_changed or _validators_changed(existing, meta):
            meta["crawled_at"] = now_iso()
            await asyncio.to_thread(store.put_json, ARCHIVE, meta_key(site.source, ident), meta)
        outcome = _outcome(prev, meta)
        result = {
            "outcome": outcome,
            "content_hash": meta["content_hash"],
            "images": {size: entry["sha256"] for size, entry in images.items()},
            "reextracted": reextracted,
            "visited": True,
            **self._feed(ident),
        }
        kinds = self.run_.item_errors.pop(ident, [])
        if any(kind != "http_404" for kind in kinds):
            result["had_errors"] = True  # a transient failure: visit again next time whatever the feed says
        return result

    def _feed(self, ident: str) -> dict[str, Any]:
        return {"feed_digest": self.p["feed"]["digests"].get(ident)}

    def _json(self, fetched: Fetched, ident: str) -> dict[str, Any] | None:
        try:
            doc = json.loads(fetched.text())
        except FetchError as exc:
            self.run_.error(exc, ident)
            return None
        except ValueError as exc:
            self.run_.error({"url": fetched.url, "kind": "parse", "status": fetched.status, "message": str(exc)}, ident)
            return None
        return doc if isinstance(doc, dict) else None

    async def _page(self, fetched: Fetched, ident: str) -> dict[str, Any] | None:
        try:
            data = await self.browser.parse_detail(fetched.text(), fetched.url)
        except FetchError as exc:
            self.run_.error(exc, ident)
            return None
        if not data["title"] and not data["rows"]:
            self.run_.error(
                {"url": fetched.url, "kind": "parse", "status": fetched.status, "message": "no title and no labels"},
                ident,
            )
            return None
        return data

    async def _images(
        self, ident: str, meta: dict[str, Any], existing: dict[str, Any] | None, reextracted: bool
    ) -> tuple[dict[str, Any], bool]:
        site, store = self.site, self.store
        known_images = (existing or {}).get("images", {})
        images: dict[str, Any] = {}
        changed = False
        for size in self.run_.settings.sizes:
            url = meta.get("image_urls", {}).get(size)
            if not url:
                self.run_.error(
                    {"url": site.detail_url(ident), "kind": "no_image_url", "message": f"no {size} URL"}, ident
                )
                continue
            key = image_key(site.source, ident, size)
            stored = await asyncio.to_thread(store.stat, ARCHIVE, key)
            validators = None
            if stored is not None and stored.metadata.get("source-url") == url:
                validators = {
                    k: stored.metadata[m]
                    for k, m in (("etag", "source-etag"), ("last_modified", "source-last-modified"))
                    if stored.metadata.get(m)
                }
            try:
                fetched = await self.fetcher.get(url, "image", validators)
            except FetchError as exc:
                self.run_.error(exc, ident)
                if size in known_images and stored is not None:
                    images[size] = known_images[size]  # keep what we have
                continue
            known = known_images.get(size)
            if fetched.not_modified and stored is not None:
                if known and known.get("sha256") == stored.sha256:
                    entry = dict(known)
                    if reextracted and known.get("wcs_source") != "embedded-avm":
                        entry["wcs"], entry["wcs_source"] = ex.image_wcs(meta, entry["width"], entry["height"], None)
                else:  # stored by an attempt that died before its meta.json: describe it from the store
                    body = await asyncio.to_thread(store.get_bytes, ARCHIVE, key)
                    entry = self._describe(meta, url, key, body, stored.metadata)
                images[size] = entry
                continue
            body = fetched.body
            digest = hashlib.sha256(body).hexdigest()
            object_meta = {
                "source-url": url,
                **({"source-etag": fetched.headers["etag"]} if "etag" in fetched.headers else {}),
                **(
                    {"source-last-modified": fetched.headers["last-modified"]}
                    if "last-modified" in fetched.headers
                    else {}
                ),
            }
            if stored is None or stored.sha256 != digest or stored.metadata.get("source-url") != url:
                await asyncio.to_thread(store.put_bytes, ARCHIVE, key, body, "image/jpeg", object_meta)
                metrics.IMAGES.labels(site.source, size).inc()
                self.run_.count("images")
                changed = True
            else:  # same bytes under new validators: remember them, nothing to rewrite but metadata
                await asyncio.to_thread(store.put_bytes, ARCHIVE, key, body, "image/jpeg", object_meta)
            images[size] = self._describe(meta, url, key, body, object_meta)
        return images, changed

    def _describe(self, meta: dict[str, Any], url: str, key: str, body: bytes, object_meta: dict[str, str]) -> dict:
        with Image.open(io.BytesIO(body)) as img:
            width, height = img.size
        embedded = ex.avm_from_image(body)
        wcs, source = ex.image_wcs(meta, width, height, embedded)
        embedded_offset = None
        if wcs and source != "embedded-avm" and embedded is not None and embedded.has_wcs:
            # The file's own AVM and the one we use should put the sky on the same pixels.
            embedded_offset = round(max_offset_px(wcs, embedded.header(width, height)), 3)
            if embedded_offset > EMBEDDED_AVM_TOLERANCE_PX:
                self.run_.count("avm_disagreements")
        return {
            "key": key,
            "url": url,
            "width": width,
            "height": height,
            "bytes": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
            "etag": object_meta.get("source-etag", ""),
            "last_modified": object_meta.get("source-last-modified", ""),
            "wcs": wcs,
            "wcs_source": source,
            "embedded_avm_offset_px": embedded_offset,  # None: the file carries no full WCS to compare
        }

    # -- 4. withdrawn ---------------------------------------------------------------------------------

    async def find_withdrawn(self) -> None:
        listing = self.p["listing"]
        if not listing["complete"]:
            return  # a partial listing (max_pages, errors) proves nothing about absent ids
        listed = set(listing["ids"])
        gone = self.p.setdefault("gone", {})
        for ident in sorted(self.state.active_ids() - listed):
            if ident in gone:
                continue
            self.ctx.check()
            try:
                fetched = await self.fetcher.get(self.site.json_url(ident), "json")
                doc = self._json(fetched, ident) or {}
                if doc.get("Type") == "Observation":
                    continue  # still there and still an observation: the listing missed it
                reason = f"no longer listed as an observation (type {doc.get('Type')!r})"
            except FetchError as exc:
                if exc.kind != "http_404":
                    self.run_.error(exc, ident)
                    continue
                reason = "removed from the archive (404)"
            meta = await asyncio.to_thread(_load_meta, self.store, self.site.source, ident)
            if meta is not None and not meta.get("withdrawn"):
                meta.update(withdrawn=True, withdrawn_at=now_iso(), withdrawn_reason=reason)
                await asyncio.to_thread(self.store.put_json, ARCHIVE, meta_key(self.site.source, ident), meta)
            gone[ident] = reason
            self.run_.count("withdrawn")
            metrics.ITEMS.labels(self.site.source, "withdrawn").inc()
            self.run_.save_checkpoint()

    # -- 5. commit ---------------------------------------------------------------------------------------

    def commit(self) -> None:
        state, now = self.state, now_iso()
        listing, done = self.p["listing"], self.p.get("done", {})
        for ident, result in done.items():
            item = state.items.setdefault(ident, {"first_seen": now})
            outcome = result["outcome"]
            item["last_seen"] = now
            if outcome == "error":
                item["error"] = result.get("error", "")
                item.setdefault("status", "error")
                item["feed_digest"] = None  # visit it again next time
                continue
            item.pop("error", None)
            if outcome == "skipped":
                item.update(
                    status="skipped",
                    skip_reason=result.get("skip_reason"),
                    feed_digest=result["feed_digest"],
                    validators=result.get("validators", item.get("validators", {})),
                )
                continue
            item.update(
                status="active",
                content_hash=result.get("content_hash"),
                images=result.get("images", {}),
                feed_digest=None if result.get("had_errors") else result.get("feed_digest"),
                withdrawn_at=None,
            )
        for ident, reason in self.p.get("gone", {}).items():
            item = state.items.setdefault(ident, {"first_seen": now})
            item.update(status="withdrawn", withdrawn_at=now, withdrawn_reason=reason, feed_digest=None)
        if listing["complete"]:
            state.listing = {"pages": listing["pages"], "total": listing["total"]}
        if self.p["feed"]["complete"]:
            state.feed = {"pages": self.p["feed"]["pages"]}
        outcomes = {o: sum(1 for r in done.values() if r["outcome"] == o) for o in OUTCOMES}
        outcomes["withdrawn"] = len(self.p.get("gone", {}))
        report = {
            "job_id": self.ctx.job_id,
            "source": self.site.source,
            "mode": "incremental" if self.run_.incremental else "full",
            "finished_at": now,
            "listed": len(listing["ids"]),
            "listing_complete": listing["complete"],
            "outcomes": outcomes,
            "changes": {
                o: sorted(i for i, r in done.items() if r["outcome"] == o) for o in ("new", "changed", "skipped")
            }
            | {"withdrawn": sorted(self.p.get("gone", {}))},
            "errors": [e for e in self.run_.cp.get("errors", []) if e.get("source") == self.site.source],
        }
        state.runs.append({k: report[k] for k in ("job_id", "mode", "finished_at", "listed", "outcomes")})
        self.store.put_json(BUCKET, f"{self.site.source}/runs/{self.ctx.job_id}.json", report)
        state.save(self.store)


# -- helpers ------------------------------------------------------------------------------------------


def _listing_fields(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: entry[k] for k in ("id", "title", "width", "height", "url", "potw") if k in entry}


def _load_meta(store: Any, source: str, ident: str) -> dict[str, Any] | None:
    try:  # one request, not exists() then get (this runs for every item of every crawl)
        return store.get_json(ARCHIVE, meta_key(source, ident))
    except ObjectNotFound:
        return None


def _result(prev: dict[str, Any]) -> dict[str, Any]:
    """An item's result carried over from the previous run (an incremental run did not visit it)."""
    return {
        "content_hash": prev.get("content_hash"),
        "images": prev.get("images", {}),
        "feed_digest": prev.get("feed_digest"),
        "skip_reason": prev.get("skip_reason"),
    }


def _outcome(prev: dict[str, Any] | None, meta: dict[str, Any]) -> str:
    if not prev or prev.get("status") not in ("active",):
        return "new"
    images = {size: entry["sha256"] for size, entry in meta["images"].items()}
    if prev.get("content_hash") != meta["content_hash"] or prev.get("images", {}) != images:
        return "changed"
    return "unchanged"


def _validators_changed(existing: dict[str, Any], meta: dict[str, Any]) -> bool:
    return existing.get("validators") != meta.get("validators") or bool(existing.get("withdrawn"))


def run_crawl(ctx: JobContext, sites: list[SiteProfile], settings: CrawlSettings) -> dict[str, Any]:
    """The job handler's body: one event loop for the browser and the fetches."""
    incremental = ctx.params.get("incremental") == "true"
    max_pages = int(ctx.params.get("max_pages") or 0)
    return asyncio.run(CrawlRun(ctx, sites, settings, incremental, max_pages).run())
