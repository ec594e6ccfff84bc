"""From a footprint (or an archive observation) to stored survey pixels: the work of one
GetCutout, shared by the RPC and the batch job, free of gRPC."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from services.cutouts import metrics
from services.cutouts.coverage import assess
from services.cutouts.geometry import FootprintSpec, Limits, footprint_key, outreach_wcs, survey_grid, validate
from services.cutouts.store import Record, lookup, save
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
        self, store: ObjectStore, surveys: dict[str, Survey], upstream: Hips2Fits, limits: Limits, upstream_url: str
    ) -> None:
        self.store = store
        self.surveys = surveys
        self.upstream = upstream
        self.limits = limits
        self.upstream_url = upstream_url
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

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
            found = lookup(self.store, slug, key)
            if found is not None and not self._intact(found):
                found = None  # its file was replaced since (the observation's WCS changed): fetch again
            if found is not None:
                metrics.CACHE.labels(slug, "hit").inc()
                return Result(found, True)
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
            )
            return Result(record, False)

    def _intact(self, record: Record) -> bool:
        if not record.available or record.fits is None:
            return True
        info = self.store.stat(record.fits["bucket"], record.fits["key"])
        return info is not None and info.sha256 == record.fits["sha256"]

    def _lock(self, name: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(name, threading.Lock())
