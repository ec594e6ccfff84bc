"""Crawler gRPC service: starts crawl jobs of the ESA/Hubble and ESA/Webb archives and
answers questions about what was crawled (the ``archive`` bucket)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

import grpc

from services.api import crawler_pb2, crawler_pb2_grpc
from services.crawler import catalog
from services.crawler.browser import browser_available
from services.crawler.crawl import CrawlSettings, run_crawl
from services.crawler.fetch import FetchPolicy
from services.crawler.sites import profile
from services.runtime.config import Config, Setting
from services.runtime.errors import FailedPrecondition, InvalidArgument
from services.runtime.jobs import JobContext
from services.runtime.jobs_api import job_to_proto
from services.runtime.logs import fields
from services.runtime.server import ServiceContext, ServiceSpec

log = logging.getLogger(__name__)
SERVICE = crawler_pb2.DESCRIPTOR.services_by_name["Crawler"].full_name
IMAGE_SIZES = ("screen", "large", "publicationjpg", "original")
USER_AGENT = "PrettierSpaceSurvey-crawler/1.0 (+https://github.com/prettier-space-survey; outreach image research)"

SETTINGS = (
    Setting("ESAHUBBLE_URL", "str", "https://esahubble.org", "base URL of the ESA/Hubble site (a replica in tests)"),
    Setting("ESAWEBB_URL", "str", "https://esawebb.org", "base URL of the ESA/Webb site (a replica in tests)"),
    Setting(
        "CRAWL_SIZES", "str", "screen,large", f"image sizes to download, comma-separated: {', '.join(IMAGE_SIZES)}"
    ),
    Setting("CRAWL_RATE_PER_HOST", "non_negative_float", "1", "requests per second per host (0: unlimited)"),
    Setting("CRAWL_CONCURRENCY", "positive_int", "4", "pages handled at once in the one browser"),
    Setting("CRAWL_TIMEOUT_S", "positive_float", "30", "timeout of one HTTP request"),
    Setting("CRAWL_RETRIES", "positive_int", "4", "retries of a request after a timeout, 5xx or 429"),
    Setting("CRAWL_BACKOFF_S", "non_negative_float", "1", "first retry delay; doubles each retry"),
    Setting("CRAWL_MAX_RETRY_AFTER_S", "positive_float", "300", "longest Retry-After the crawler waits out"),
    Setting("CRAWL_USER_AGENT", "str", USER_AGENT, "User-Agent (robots.txt rules are matched against it)"),
    Setting("CRAWL_EXCLUDED_TYPES", "str", "Early Universe,Planet,Solar System", "taxonomy parts never crawled"),
    Setting("CRAWL_MIN_FOV_ARCMIN", "positive_float", "0.5", "smaller fields are skipped"),
    Setting("CHROMIUM_PATH", "str", "auto", "Chromium binary; auto: Debian's /usr/lib/chromium/chromium"),
)


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def crawl_settings(config: Config) -> CrawlSettings:
    sizes = _csv(config["CRAWL_SIZES"])
    unknown = [s for s in sizes if s not in IMAGE_SIZES]
    if not sizes or unknown:
        raise FailedPrecondition(
            f"PSS_CRAWL_SIZES={config['CRAWL_SIZES']!r}: expected some of {', '.join(IMAGE_SIZES)}"
        )
    return CrawlSettings(
        policy=FetchPolicy(
            user_agent=config["CRAWL_USER_AGENT"],
            rate_per_host=config["CRAWL_RATE_PER_HOST"],
            timeout_s=config["CRAWL_TIMEOUT_S"],
            retries=config["CRAWL_RETRIES"],
            backoff_s=config["CRAWL_BACKOFF_S"],
            max_retry_after_s=config["CRAWL_MAX_RETRY_AFTER_S"],
        ),
        sizes=sizes,
        concurrency=config["CRAWL_CONCURRENCY"],
        chromium=config["CHROMIUM_PATH"],
        excluded_types=_csv(config["CRAWL_EXCLUDED_TYPES"]),
        min_fov_arcmin=config["CRAWL_MIN_FOV_ARCMIN"],
    )


def site_urls(config: Config) -> dict[str, str]:
    return {"esahubble": config["ESAHUBBLE_URL"], "esawebb": config["ESAWEBB_URL"]}


def crawl_job(ctx: JobContext) -> dict[str, Any]:
    config = ctx.config
    urls = site_urls(config)
    sites = [profile(name, urls[name]) for name in ctx.params["sources"].split(",")]
    return run_crawl(ctx, sites, crawl_settings(config))


class CrawlerServicer(crawler_pb2_grpc.CrawlerServicer):
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.store = ctx.store

    def StartCrawl(self, request: crawler_pb2.StartCrawlRequest, context: grpc.ServicerContext) -> Any:
        sources = catalog.sources_from_request(list(request.sources))
        if not browser_available(self.ctx.config["CHROMIUM_PATH"]):
            raise FailedPrecondition(
                "this crawler has no Chromium: install Debian's chromium package or set PSS_CHROMIUM_PATH"
            )
        crawl_settings(self.ctx.config)  # a bad PSS_CRAWL_SIZES fails here, not in the job
        self._refuse_overlap(sources, request.request_id)
        params = {
            "sources": ",".join(sources),
            "incremental": "true" if request.incremental else "false",
            "max_pages": str(request.max_pages),
        }
        record = self.ctx.jobs.submit("crawl", params, request_id=request.request_id)
        return job_to_proto(record)

    def _refuse_overlap(self, sources: list[str], request_id: str) -> None:
        """Two crawls of one source would race on its state: one at a time."""

        def overlaps(job: dict[str, Any]) -> str:
            busy = set(job["params"].get("sources", "").split(",")) & set(sources)
            return f"a crawl of {', '.join(sorted(busy))}" if busy else ""

        self.ctx.jobs.refuse_overlap("crawl", overlaps, request_id)

    def GetObservation(self, request: crawler_pb2.ObservationKey, context: grpc.ServicerContext) -> Any:
        source = catalog.source_name(request.source)
        return catalog.meta_to_proto(catalog.get_meta(self.store, source, request.image_id))

    def ListObservations(
        self, request: crawler_pb2.ListObservationsRequest, context: grpc.ServicerContext
    ) -> Iterator[crawler_pb2.Observation]:
        after, before = request.released_after, request.released_before
        if (
            request.HasField("released_after")
            and request.HasField("released_before")
            and after.ToDatetime() > before.ToDatetime()
        ):
            raise InvalidArgument("released_after", "is later than released_before")
        sources = catalog.sources_from_request(list(request.sources))
        for meta in catalog.iter_meta(self.store, sources):
            if not context.is_active():
                return
            if catalog.matches(meta, request):
                yield catalog.meta_to_proto(meta)


def register(server: grpc.Server, ctx: ServiceContext) -> Iterable[str]:
    if not browser_available(ctx.config["CHROMIUM_PATH"]):
        log.warning("no Chromium: crawls will be refused", extra=fields(chromium_path=ctx.config["CHROMIUM_PATH"]))
    crawler_pb2_grpc.add_CrawlerServicer_to_server(CrawlerServicer(ctx), server)
    return [SERVICE]


SPEC = ServiceSpec(name="crawler", register=register, settings=SETTINGS, job_handlers={"crawl": crawl_job})
