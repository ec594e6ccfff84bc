"""The evaluation job: verdicts for (outreach image, survey cutout) pairs, stored in ``curation``.

One observation is one unit of work: its image is read and checked once, then each survey's
cutout (asked of the cutouts service, which answers from its cache) is checked against it. A
pair whose residual misalignment is small gets a new cutout requested on the grid that lines
its pixels up with the outreach image, and is measured again. Units run in worker processes
(PSS_CURATE_WORKERS), each with its own object store and cutouts connections.

A verdict records the digest of what it was computed from (meta.json's content hash, the
image's sha256, the survey, the policy, METHOD_VERSION): an unchanged pair is not evaluated
again unless asked to, a re-crawled image is.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import multiprocessing
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import grpc
import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from PIL import Image

from services.api import common_pb2, crawler_pb2, cutouts_pb2
from services.client.clients import CutoutsClient
from services.crawler.catalog import ENUM_BY_SOURCE
from services.curator import alignment as align
from services.curator import metrics, verdicts
from services.curator.evaluate import (
    Cutout,
    OutreachChecks,
    PairResult,
    Policy,
    alignment_record,
    check_outreach,
    check_pair,
    reason_code,
    survey_valid_mask,
)
from services.cutouts.geometry import header_wcs
from services.runtime.config import Config
from services.runtime.errors import ServiceError, Unavailable
from services.runtime.jobs import JobContext
from services.runtime.logs import fields
from services.runtime.objectstore import ObjectNotFound, ObjectStore

log = logging.getLogger(__name__)

ARCHIVE = "archive"
CUTOUTS = "cutouts"
METHOD_VERSION = "1"  # bump when a check changes: every pair is then evaluated again
MAX_RESIDUAL_PX = 0.5  # after correction, what is left must be this small (or within 3 sigma)


@dataclass(frozen=True)
class EvaluationSettings:
    surveys: tuple[str, ...]
    policy: Policy
    max_image_pixels: int  # the largest stored image size evaluated (the biggest that fits)
    cutout_timeout_s: float


def pick_image(meta: dict[str, Any], max_pixels: int) -> tuple[str, dict[str, Any]] | None:
    """The largest stored size with a WCS within max_pixels, else the smallest with one."""
    sized = [
        (int(e["width"]) * int(e["height"]), size, e)
        for size, e in (meta.get("images") or {}).items()
        if e.get("width") and e.get("height")
    ]
    if not sized:
        return None
    sized.sort(key=lambda t: (t[0], t[1]))
    fitting = [t for t in sized if t[0] <= max_pixels]
    _, size, entry = fitting[-1] if fitting else sized[0]
    return size, entry


def pair_digest(meta: dict[str, Any], image: dict[str, Any], survey: str, policy: Policy) -> str:
    text = json.dumps(
        [METHOD_VERSION, meta.get("content_hash"), image.get("sha256"), image.get("wcs"), survey, asdict(policy)],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()


def decode_image(data: bytes) -> np.ndarray:
    """(H, W, 3) uint8 in FITS orientation (row 0 at the bottom)."""
    with Image.open(io.BytesIO(data)) as img:
        return np.ascontiguousarray(np.asarray(img.convert("RGB"))[::-1])


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Evaluator:
    """Evaluates observations; one per worker process."""

    def __init__(self, store: ObjectStore, cutouts: CutoutsClient, settings: EvaluationSettings) -> None:
        self.store = store
        self.cutouts = cutouts
        self.settings = settings

    # -- cutouts ----------------------------------------------------------------------------

    def _ask(self, request: cutouts_pb2.CutoutRequest) -> cutouts_pb2.Cutout:
        try:
            return self.cutouts.stub.GetCutout(request, timeout=self.settings.cutout_timeout_s)
        except grpc.RpcError as exc:
            raise Unavailable(f"the cutouts service could not give a {request.survey} cutout: {exc.details()}") from exc

    def _load(self, reply: cutouts_pb2.Cutout) -> tuple[Cutout, dict[str, Any] | None]:
        if not reply.available:
            return Cutout(reply.survey, False, reply.unavailable_reason), None
        data = self.store.get_bytes(reply.fits.bucket, reply.fits.key)
        with fits.open(io.BytesIO(data)) as hdul:
            cube = np.asarray(hdul[0].data, dtype=np.float32)
        wcs, _ = header_wcs(json.loads(reply.wcs_header_json), 0, 0)
        ref = {
            "bucket": reply.fits.bucket,
            "key": reply.fits.key,
            "sha256": reply.fits.sha256,
            "footprint_key": reply.footprint_key,
            "credit": reply.credit,
            "wcs": json.loads(reply.wcs_header_json),
        }
        return Cutout(reply.survey, True, "", cube, wcs), ref

    def _recut(self, slug: str, grid: WCS, shape: tuple[int, int]) -> tuple[Cutout, dict[str, Any] | None]:
        header = {k: v for k, v in grid.to_header().items()}
        header["NAXIS1"], header["NAXIS2"] = shape[1], shape[0]
        footprint = common_pb2.Footprint(
            wcs_header_json=json.dumps(header), grid=common_pb2.PixelGrid(width=shape[1], height=shape[0])
        )
        return self._load(
            self._ask(cutouts_pb2.CutoutRequest(footprint=footprint, survey=slug, match_outreach_grid=True))
        )

    # -- one observation --------------------------------------------------------------------

    def evaluate(self, source: str, image_id: str, surveys: tuple[str, ...], reevaluate: bool) -> dict[str, Any]:
        """Evaluate the pairs of one observation that need it; returns a summary for the job."""
        started = time.monotonic()
        meta = self.store.get_json(ARCHIVE, f"{source}/{image_id}/meta.json")
        if meta.get("withdrawn"):
            return {"withdrawn": True, "pairs": {}}
        existing = verdicts.load(self.store, source, image_id) or {}
        picked = pick_image(meta, self.settings.max_image_pixels)
        policy = self.settings.policy
        document: dict[str, Any] = {
            "schema": verdicts.SCHEMA,
            "source": source,
            "image_id": image_id,
            "meta_content_hash": meta.get("content_hash"),
            "outreach": {},
            "pairs": dict(existing.get("pairs", {})),
        }
        digests = {slug: pair_digest(meta, picked[1] if picked else {}, slug, policy) for slug in surveys}
        todo = [s for s in surveys if reevaluate or existing.get("pairs", {}).get(s, {}).get("inputs") != digests[s]]
        if not todo:
            return {"skipped": True, "pairs": {}}
        if picked is None or not picked[1].get("wcs"):
            why = "no stored image" if picked is None else "the stored image has no WCS (no AVM, no labels)"
            document["outreach"] = {"image": None, "mask": None, "reasons": [f"no-wcs: {why}"]}
            for slug in todo:
                document["pairs"][slug] = {
                    "inputs": digests[slug],
                    "evaluated": _now(),
                    "usable": False,
                    "reasons": [f"no-wcs: {why}"],
                    "flags": [],
                    "scores": {},
                }
            return self._commit(document, todo, started)
        size, entry = picked
        image = decode_image(self.store.get_bytes(ARCHIVE, entry["key"]))
        wcs, _ = header_wcs(entry["wcs"], image.shape[1], image.shape[0])
        checks = check_outreach(image, policy)
        mask_ref = None
        if checks.has_missing_data:
            mask_ref = verdicts.save_mask(self.store, source, image_id, "outreach", ~checks.missing)
        document["outreach"] = {
            "image": {
                "bucket": ARCHIVE,
                "key": entry["key"],
                "sha256": entry.get("sha256", ""),
                "size": size,
                "width": image.shape[1],
                "height": image.shape[0],
                "wcs": entry["wcs"],
            },
            "mask": mask_ref,
            "valid_fraction": checks.valid_fraction,
            "reasons": checks.reasons,
        }
        for slug in todo:
            pair = self._pair(source, image_id, slug, image, wcs, checks)
            document["pairs"][slug] = {"inputs": digests[slug], "evaluated": _now(), **pair}
        return self._commit(document, todo, started)

    def _pair(
        self, source: str, image_id: str, slug: str, image: np.ndarray, wcs: WCS, checks: OutreachChecks
    ) -> dict[str, Any]:
        key = crawler_pb2.ObservationKey(source=ENUM_BY_SOURCE[source], image_id=image_id)
        cutout, ref = self._load(self._ask(cutouts_pb2.CutoutRequest(observation=key, survey=slug)))
        result = check_pair(image, wcs, checks, cutout, self.settings.policy)
        record: dict[str, Any] = {"cutout": ref, "corrected_cutout": None, "residual_alignment": None}
        if result.usable and result.needs_correction and cutout.wcs is not None and cutout.cube is not None:
            result, record = self._correct(image, wcs, checks, cutout, result, record)
        if result.survey_valid is not None:
            record["survey_mask"] = verdicts.save_mask(self.store, source, image_id, slug, result.survey_valid)
        else:
            record["survey_mask"] = None
        # The WCS under which the survey pixels line up with the outreach image's own WCS.
        record["pairing_wcs"] = ref["wcs"] if ref else None
        return {
            "usable": result.usable,
            "reasons": result.reasons,
            "flags": result.flags,
            "scores": result.scores,
            "alignment": alignment_record(result.alignment),
            **record,
        }

    def _correct(
        self, image: np.ndarray, wcs: WCS, checks: OutreachChecks, cutout: Cutout, result: PairResult, record: dict
    ) -> tuple[PairResult, dict[str, Any]]:
        """Ask for the cutout on the grid that lines it up with the outreach image, then measure again."""
        assert cutout.cube is not None and cutout.wcs is not None and result.alignment is not None
        shape = cutout.cube.shape[1:]
        grid = align.aligned_grid_wcs(cutout.wcs, result.alignment)
        fixed, fixed_ref = self._recut(cutout.survey, grid, shape)
        if fixed.cube is None or fixed.wcs is None or fixed_ref is None:
            result.usable = False
            result.reasons.append(f"misalignment: the corrected cutout is unavailable ({fixed.reason})")
            return result, record
        residual = align.measure_alignment(image, wcs, fixed.cube, cutout.wcs)
        record["residual_alignment"] = alignment_record(residual)
        limit = max(MAX_RESIDUAL_PX, 3 * residual.max_uncertainty_px) if residual.solved else math.nan
        if not residual.solved or residual.max_displacement_px > limit:
            result.usable = False
            result.reasons.append(
                "misalignment: the corrected cutout still disagrees "
                f"({'unsolved' if not residual.solved else f'{residual.max_displacement_px:.2f} px'})"
            )
            return result, record
        result.scores["residual_px"] = round(residual.max_displacement_px, 4)
        # The corrected pixels pair with the outreach image on the original grid's WCS.
        record["corrected_cutout"] = fixed_ref
        original = record["cutout"]
        record["cutout"] = {**fixed_ref, "wcs": original["wcs"], "recut_wcs": fixed_ref["wcs"]}
        if checks.has_missing_data or not np.isfinite(fixed.cube).all():
            result.survey_valid = survey_valid_mask(checks.missing, wcs, fixed.cube, cutout.wcs)
            if result.survey_valid.all():
                result.survey_valid = None
        return result, record

    def _commit(self, document: dict[str, Any], todo: list[str], started: float) -> dict[str, Any]:
        self.store.put_json(verdicts.BUCKET, verdicts.verdict_key(document["source"], document["image_id"]), document)
        summary = {
            slug: {
                "usable": document["pairs"][slug]["usable"],
                "reason": reason_code((document["pairs"][slug]["reasons"] or ["accepted"])[0]),
                "flags": [reason_code(f) for f in document["pairs"][slug]["flags"]],
            }
            for slug in todo
        }
        return {"pairs": summary, "seconds": time.monotonic() - started}


# -- worker processes ---------------------------------------------------------------------------

_WORKER: Evaluator | None = None


def _init_worker(config: Config, settings: EvaluationSettings, cutouts_address: str) -> None:
    global _WORKER
    warnings.simplefilter("ignore")
    if _WORKER is not None:  # a job run in the service's own thread before: its connection goes
        _WORKER.cutouts.close()
    _WORKER = Evaluator(ObjectStore.from_config(config), CutoutsClient(cutouts_address), settings)


def _run_one(task: tuple[str, str, tuple[str, ...], bool]) -> tuple[str, str, dict[str, Any] | str]:
    source, image_id, surveys, reevaluate = task
    assert _WORKER is not None
    try:
        return source, image_id, _WORKER.evaluate(source, image_id, surveys, reevaluate)
    except ObjectNotFound:
        return source, image_id, f"no observation {source}/{image_id} in the archive"
    except ServiceError as exc:
        return source, image_id, str(exc)
    except Exception as exc:  # a bug or a corrupt object must not end the job: logged, counted
        log.exception("evaluation of %s/%s failed", source, image_id)
        return source, image_id, f"{type(exc).__name__}: {exc}"


def targets(store: ObjectStore, params: dict[str, str], surveys: tuple[str, ...]) -> list[tuple[str, str, tuple]]:
    """(source, image_id, surveys) in a stable order: the pairs asked for, or every archive observation."""
    if params.get("pairs"):
        grouped: dict[tuple[str, str], list[str]] = {}
        for item in params["pairs"].split(","):
            obs, _, slug = item.partition("@")
            source, _, image_id = obs.partition("/")
            grouped.setdefault((source, image_id), [])
            for s in [slug] if slug else surveys:
                if s not in grouped[(source, image_id)]:
                    grouped[(source, image_id)].append(s)
        return [(src, ident, tuple(s)) for (src, ident), s in sorted(grouped.items())]
    out = []
    for key in sorted(store.list_keys(ARCHIVE, "")):
        if key.endswith("/meta.json") and key.count("/") == 2:
            source, image_id, _ = key.split("/")
            if source in ENUM_BY_SOURCE:
                out.append((source, image_id, surveys))
    return out


def run_job(ctx: JobContext, settings: EvaluationSettings, cutouts_address: str, workers: int) -> dict[str, Any]:
    todo = targets(ctx.store, ctx.params, settings.surveys)
    reevaluate = ctx.params.get("reevaluate") == "1"
    checkpoint = ctx.checkpoint() or {"next": 0, "counters": {}}
    if checkpoint["counters"]:
        ctx.set_counters(checkpoint["counters"])
    start = checkpoint["next"]
    ctx.progress(stage="evaluate", total=len(todo), done=start)
    workers = max(1, min(workers, len(todo) - start))
    tasks = [(src, ident, surveys, reevaluate) for src, ident, surveys in todo]
    pool = None
    if workers > 1:
        pool = ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("spawn"),  # never fork a gRPC server process
            initializer=_init_worker,
            initargs=(ctx.config, settings, cutouts_address),
        )
    else:
        _init_worker(ctx.config, settings, cutouts_address)
    began, pairs_done = time.monotonic(), 0
    try:
        chunk = workers * 2
        for first in range(start, len(tasks), chunk):
            ctx.check()
            part = tasks[first : first + chunk]
            results = list(pool.map(_run_one, part)) if pool else [_run_one(t) for t in part]
            for source, image_id, outcome in results:
                pairs_done += _account(ctx, source, image_id, outcome)
            # The checkpoint first: whoever sees the progress may rely on it being kept.
            ctx.save_checkpoint({"next": first + len(part), "counters": ctx.counters()})
            ctx.progress(done=first + len(part))
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    elapsed = time.monotonic() - began
    if pairs_done and elapsed > 0:
        metrics.THROUGHPUT.set(pairs_done / elapsed)
    counters = ctx.counters()
    keys = ("evaluated", "usable", "rejected", "corrected", "masked", "skipped", "withdrawn", "errors")
    return {k: counters.get(k, 0) for k in keys} | {"observations": len(todo)}


def _account(ctx: JobContext, source: str, image_id: str, outcome: dict[str, Any] | str) -> int:
    if isinstance(outcome, str):
        ctx.count("errors")
        log.warning("evaluation failed", extra=fields(job_id=ctx.job_id, target=f"{source}/{image_id}", error=outcome))
        return 0
    if outcome.get("withdrawn"):
        ctx.count("withdrawn")
        return 0
    if outcome.get("skipped"):
        ctx.count("skipped")
        return 0
    metrics.OBSERVATION_SECONDS.observe(outcome["seconds"])
    for slug, pair in outcome["pairs"].items():
        ctx.count("evaluated")
        ctx.count("usable" if pair["usable"] else "rejected")
        for flag in pair["flags"]:
            ctx.count(flag)
        metrics.PAIRS.labels(slug, "usable" if pair["usable"] else "rejected", pair["reason"]).inc()
    return len(outcome["pairs"])
