"""From a footprint (or an archive observation) to stored survey pixels: the work of one
GetCutout, shared by the RPC and the batch job, free of gRPC."""

from __future__ import annotations

import os
import random
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from services.cutouts import metrics
from services.cutouts.coverage import assess
from services.cutouts.geometry import FootprintSpec, Limits, footprint_key, outreach_wcs, survey_grid, validate
from services.cutouts.store import BUCKET, Record, lookup, pending_key, save
from services.cutouts.surveys import Survey
from services.cutouts.upstream import Hips2Fits
from services.runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from services.runtime.objectstore import ObjectStore

ARCHIVE = "archive"


@dataclass(frozen=True)
class Result:
    record: Record
    cached: bool


class Cutter:
    def __init__(
        self,
        store: ObjectStore,
        surveys: dict[str, Survey],
        upstream: Hips2Fits,
        limits: Limits,
        upstream_url: str,
        pending_ttl_s: float = 300.0,
    ) -> None:
        self.store = store
        self.surveys = surveys
        self.upstream = upstream
        self.limits = limits
        self.upstream_url = upstream_url
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self.owner = f"{socket.gethostname()}/{os.getpid()}"
        # A fetch marked by another replica longer ago than this is presumed dead.
        self.pending_ttl_s = pending_ttl_s

    def survey(self, slug: str) -> Survey:
        if slug not in self.surveys:
            raise InvalidArgument("survey", f"unknown survey {slug!r}: one of {', '.join(sorted(self.surveys))}")
        return self.surveys[slug]

    def observation_spec(self, source: str, image_id: str) -> FootprintSpec:
        key = f"{source}/{image_id}/meta.json"
        if not self.store.exists(ARCHIVE, key):
            raise NotFound(f"no observation {source}/{image_id} in the archive: crawl it first")
        meta = self.store.get_json(ARCHIVE, key)
        try:
            return FootprintSpec.from_meta(meta)
        except (KeyError, TypeError, ValueError) as exc:
            raise FailedPrecondition(f"observation {source}/{image_id} has no usable footprint: {exc}") from exc

    def cutout(
        self,
        slug: str,
        spec: FootprintSpec,
        scale_arcsec: float = 0.0,
        match_outreach_grid: bool = False,
        source: str = "",
        image_id: str = "",
    ) -> Result:
        survey = self.survey(slug)
        if scale_arcsec < 0 or scale_arcsec > 3600:
            raise InvalidArgument("pixel_scale_arcsec", f"{scale_arcsec} is outside 0..3600 (0: the survey's native)")
        validate(spec, self.limits)
        wcs, shape = outreach_wcs(spec)
        scale = None if match_outreach_grid else (scale_arcsec or survey.native_scale_arcsec)
        grid, grid_shape = survey_grid(wcs, shape, scale, self.limits)
        key = footprint_key(slug, grid, grid_shape)
        with self._lock(f"{slug}/{key}"):  # one upstream request for concurrent identical asks
            found = self._cached(slug, key)
            if found is None and not self._claim(slug, key):
                found = self._wait_for_other(slug, key)  # another replica is fetching it right now
            if found is not None:
                metrics.CACHE.labels(slug, "hit").inc()
                return Result(found, True)
            try:
                return self._fetch(
                    survey, slug, key, spec, grid, grid_shape, scale, match_outreach_grid, source, image_id
                )
            finally:
                self.store.delete(BUCKET, pending_key(slug, key))

    def _fetch(
        self,
        survey: Survey,
        slug: str,
        key: str,
        spec: FootprintSpec,
        grid: Any,
        grid_shape: tuple[int, int],
        scale: float | None,
        match_outreach_grid: bool,
        source: str,
        image_id: str,
    ) -> Result:
        metrics.CACHE.labels(slug, "miss").inc()
        started = time.monotonic()
        cube = self.upstream.cutout(survey.hips, grid, grid_shape)
        metrics.LATENCY.labels(slug).observe(time.monotonic() - started)
        available, reason = assess(cube)
        if not available:
            metrics.UNAVAILABLE.labels(slug, reason.split(" (")[0]).inc()
        request: dict[str, Any] = {
            "survey": slug,
            "hips": survey.hips,
            "upstream": self.upstream_url,
            "scale_arcsec": scale,
            "match_outreach_grid": match_outreach_grid,
            "target": {"source": source, "image_id": image_id} if image_id else {"footprint": spec.__dict__},
            "grid": list(grid_shape),
        }
        record = save(
            self.store,
            slug,
            survey.hips,
            key,
            grid,
            cube,
            reason,
            request,
            datetime.now(UTC).isoformat(timespec="seconds"),
            source,
            image_id,
            survey.credit,
        )
        return Result(record, False)

    def _cached(self, slug: str, key: str) -> Record | None:
        found = lookup(self.store, slug, key)
        if found is not None and not self._intact(found):
            return None  # its file was replaced since (the observation's WCS changed): fetch again
        return found

    def _claim(self, slug: str, key: str) -> bool:
        """Mark the key as being fetched by this process, unless another process marked it
        recently. S3 has no compare-and-swap: two claims in the same instant both win (and
        both fetch); the marker narrows the window from a whole fetch to a read-back."""
        marker = pending_key(slug, key)
        info = self.store.stat(BUCKET, marker)
        if info is not None and info.metadata.get("owner") != self.owner:
            age = time.time() - float(info.metadata.get("since", "0"))
            if age < self.pending_ttl_s:
                return False
        self.store.put_bytes(BUCKET, marker, b"", "text/plain", {"owner": self.owner, "since": f"{time.time():.3f}"})
        time.sleep(random.uniform(0.02, 0.1))  # a rival's claim in the same instant lands in this window
        again = self.store.stat(BUCKET, marker)
        return again is None or again.metadata.get("owner") == self.owner

    def _wait_for_other(self, slug: str, key: str) -> Record | None:
        """The record another replica is fetching, once it is there; None when that replica
        gave up or died (its marker gone or stale): then this one fetches."""
        deadline = time.monotonic() + self.pending_ttl_s
        while time.monotonic() < deadline:
            found = self._cached(slug, key)
            if found is not None:
                return found
            if not self.store.exists(BUCKET, pending_key(slug, key)):
                break
            time.sleep(0.2)
        self._claim(slug, key)
        return self._cached(slug, key)

    def _intact(self, record: Record) -> bool:
        if not record.available or record.fits is None:
            return True
        info = self.store.stat(record.fits["bucket"], record.fits["key"])
        return info is not None and info.sha256 == record.fits["sha256"]

    def _lock(self, name: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(name, threading.Lock())
