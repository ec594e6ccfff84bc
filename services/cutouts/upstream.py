"""Survey pixels from CDS hips2fits, through astroquery, politely.

``Hips2Fits(policy).cutout(hips, wcs, (width, height))`` returns the survey on exactly that grid:
a (3, H, W) float32 cube in FITS orientation (row 0 at the bottom, as astropy reads the FITS the
service sends), the colour HiPS's 8-bit values 0..255, NaN where the service had no data (0 in
every band: SDSS outside its footprint).

Politeness, per hips2fits URL and shared by every ``Hips2Fits`` of the process pointed at it (CDS
asks heavy users to be gentle): requests start at most ``rate_per_s`` per second and at most
``max_concurrency`` are in flight at once; the retries count too. Each request has a read timeout of
``timeout_s`` (requests' timeout: connect, and silence between bytes of the answer). Timeouts,
connection errors, 5xx, 408 and 429 are retried ``retries`` times with exponential backoff; an answer
the service gives on purpose (a 4xx with its JSON ``{"title", "description"}``) is not: an unknown
HiPS raises ``UnknownHips`` (an ``InvalidArgument`` and a ``ValueError``), anything else
``UpstreamError`` (``Unavailable``) with the service's description.

Grids larger than one request should carry (``max_tile_side``, ``max_tile_pixels``) are cut with
``geometry.tiles()``, fetched tile by tile (in parallel, within the same bounds) and put together with
``geometry.mosaic()``.

Thread safety: astroquery's ``hips2fitsClass`` is a ``BaseQuery`` holding a ``requests.Session``,
which is not safe to share between threads, so every thread gets its own instance.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import requests
from astropy.io import fits
from astropy.wcs import WCS
from astroquery.hips2fits import hips2fitsClass

from services.runtime.errors import InvalidArgument, Unavailable

log = logging.getLogger("prettyspace.cutouts.upstream")

CDS_URL = "https://alasky.cds.unistra.fr/hips-image-services/hips2fits"
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

__all__ = ["CDS_URL", "Hips2Fits", "UnknownHips", "UpstreamError", "UpstreamPolicy"]


@dataclass(frozen=True)
class UpstreamPolicy:
    url: str = CDS_URL  # hips2fits endpoint
    timeout_s: float = 60
    retries: int = 3  # retries after the first attempt: at most 1 + retries requests per cutout (or tile)
    backoff_s: float = 1.0  # wait before retry n (0-based): backoff_s * 2**n
    rate_per_s: float = 2.0  # requests per second to the service (0: unlimited), process-wide per URL
    max_concurrency: int = 2  # requests in flight at once, process-wide per URL (0: unbounded)
    max_tile_side: int = 2048
    max_tile_pixels: int = 4_000_000


BLANK_MIN_PX = 5  # a zero region must hold a 5x5 block to count as "no data"


def blank_mask(cube: np.ndarray) -> np.ndarray:
    """Where the survey has no data: 0 in every band over a region. The service writes blank as
    0, but a dark sky pixel can be 0 too; a morphological opening keeps regions at least
    BLANK_MIN_PX across (a footprint edge, a missing plate) and leaves isolated dark pixels alone."""
    from scipy.ndimage import binary_dilation, binary_erosion

    zero = ~np.any(np.nan_to_num(cube, nan=0.0) != 0, axis=0)
    block = np.ones((BLANK_MIN_PX, BLANK_MIN_PX), dtype=bool)
    # Outside the grid counts as blank for the erosion (a region may run off the edge), not for the dilation.
    core = binary_erosion(zero, structure=block, border_value=1)
    return binary_dilation(core, structure=block, border_value=0) & zero


class UpstreamError(Unavailable):
    """hips2fits failed (after the retries, or with an error that retrying cannot cure).
    The message names the URL, the survey and the cause."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class UnknownHips(InvalidArgument, ValueError):
    """The service does not know the HiPS asked for (never retried; INVALID_ARGUMENT)."""

    def __init__(self, hips: str, description: str) -> None:
        super().__init__("hips", f"unknown HiPS '{hips}': {description}")
        self.hips = hips


class _Gate:
    """Rate and concurrency bounds for one upstream URL, shared by its clients in the process."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._in_flight = 0
        self._next_start = 0.0  # time.monotonic() before which no request may start

    @contextmanager
    def slot(self, max_concurrency: int, rate_per_s: float) -> Iterator[None]:
        interval = 1.0 / rate_per_s if rate_per_s > 0 else 0.0
        with self._cond:
            while max_concurrency > 0 and self._in_flight >= max_concurrency:
                self._cond.wait()
            self._in_flight += 1
            start = max(time.monotonic(), self._next_start)
            self._next_start = start + interval
        try:
            delay = start - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            yield
        finally:
            with self._cond:
                self._in_flight -= 1
                self._cond.notify()


_gates: dict[str, _Gate] = {}
_gates_lock = threading.Lock()


def _gate(url: str) -> _Gate:
    with _gates_lock:
        return _gates.setdefault(url, _Gate())


def _json_error(response: requests.Response) -> str | None:
    """The service's own error text ("title: description"), or None when the body is not its JSON."""
    try:
        content = response.json()
    except ValueError:
        return None
    if not isinstance(content, dict) or "title" not in content:
        return None
    title, description = str(content["title"]), str(content.get("description", "")).strip()
    return f"{title}: {description}" if description else title


class Hips2Fits:
    def __init__(self, policy: UpstreamPolicy, on_request: Callable[[str, float, int], None] | None = None) -> None:
        """``on_request(outcome, seconds, bytes)`` after every HTTP request, for metrics: outcome
        "ok", "retry" (failed, will be retried) or "error" (failed, given up)."""
        self.policy = policy
        self.on_request = on_request
        self.requests = 0  # upstream HTTP requests made (retries included)
        self._count_lock = threading.Lock()
        self._local = threading.local()
        self._gate = _gate(policy.url)

    # -- public ---------------------------------------------------------------

    def cutout(self, hips: str, wcs: WCS, shape: tuple[int, int]) -> np.ndarray:
        """The survey ``hips`` on the grid ``wcs`` of ``shape`` = (width, height) pixels (the order
        of ``wcs.pixel_shape``): (3, height, width) float32, FITS orientation, NaN where blank."""
        width, height = int(shape[0]), int(shape[1])
        if width <= 0 or height <= 0:
            raise InvalidArgument("shape", f"width and height must be positive, got {width} x {height}")
        if not self._needs_tiles(width, height):
            return self._single(hips, wcs, width, height)
        from services.cutouts import geometry  # helper D's module; only large grids need it

        parts = geometry.tiles(wcs, (width, height), self.policy.max_tile_side, self.policy.max_tile_pixels)
        workers = max(1, min(len(parts), self.policy.max_concurrency or len(parts)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hips2fits-tile") as pool:
            cubes = list(pool.map(lambda t: self._single(hips, t.wcs, t.width, t.height), parts))
        mosaic = geometry.mosaic(list(zip(parts, cubes, strict=True)), wcs, (width, height))
        return np.asarray(mosaic, dtype=np.float32)

    # -- one request ------------------------------------------------------------

    def _needs_tiles(self, width: int, height: int) -> bool:
        p = self.policy
        return width > p.max_tile_side or height > p.max_tile_side or width * height > p.max_tile_pixels

    def _client(self) -> hips2fitsClass:
        client = getattr(self._local, "client", None)
        if client is None:
            client = hips2fitsClass()
            client.server = self.policy.url  # the instance attribute its requests go to
            client.timeout = self.policy.timeout_s  # passed to requests as its timeout, per request
            self._local.client = client
        return client

    def _single(self, hips: str, wcs: WCS, width: int, height: int) -> np.ndarray:
        grid = wcs.deepcopy()
        grid.pixel_shape = (width, height)  # astroquery sends it as NAXIS1/NAXIS2
        attempts = 1 + max(0, self.policy.retries)
        for attempt in range(attempts):
            started = time.monotonic()
            nbytes = 0
            try:
                nbytes, cube = self._attempt(hips, grid, width, height)
            except UpstreamError as exc:
                last = attempt == attempts - 1
                gave_up = last or not exc.retryable
                self._report("error" if gave_up else "retry", time.monotonic() - started, nbytes)
                if gave_up:
                    if exc.retryable and attempts > 1:
                        raise UpstreamError(f"{exc} (gave up after {attempts} attempts)") from exc
                    raise
                log.info("hips2fits %s: %s; retry %d of %d", hips, exc, attempt + 1, attempts - 1)
                time.sleep(self.policy.backoff_s * 2**attempt)
                continue
            except UnknownHips:
                self._report("error", time.monotonic() - started, nbytes)
                raise
            self._report("ok", time.monotonic() - started, nbytes)
            return cube
        raise AssertionError("unreachable")  # the loop returns or raises

    def _attempt(self, hips: str, grid: WCS, width: int, height: int) -> tuple[int, np.ndarray]:
        where = f"hips2fits at {self.policy.url} ({hips}, {width}x{height} px)"
        client = self._client()
        with self._gate.slot(self.policy.max_concurrency, self.policy.rate_per_s):
            with self._count_lock:
                self.requests += 1
            try:
                response = client.query_with_wcs_async(
                    hips=hips, wcs=grid, format="fits", min_cut=0.5, max_cut=99.5, stretch="linear", cmap="Greys_r"
                )
            except requests.Timeout as exc:
                raise UpstreamError(
                    f"{where}: timed out after {self.policy.timeout_s:g} s ({type(exc).__name__})", retryable=True
                ) from exc
            except requests.RequestException as exc:
                raise UpstreamError(f"{where}: {type(exc).__name__}: {exc}", retryable=True) from exc
        body = response.content
        status = response.status_code
        if status != 200:
            service_says = _json_error(response)
            if status in RETRY_STATUSES or status >= 500:
                detail = service_says or body[:200].decode("utf-8", "replace").strip()
                raise UpstreamError(f"{where}: HTTP {status}: {detail}", retryable=True)
            if service_says is None:
                detail = body[:200].decode("utf-8", "replace").strip()
                raise UpstreamError(f"{where}: HTTP {status}: {detail}")
            if "hips not found" in service_says.lower() or "no hips matches" in service_says.lower():
                raise UnknownHips(hips, service_says)
            raise UpstreamError(f"{where}: refused (HTTP {status}): {service_says}")
        return len(body), self._decode(where, body, width, height)

    @staticmethod
    def _decode(where: str, body: bytes, width: int, height: int) -> np.ndarray:
        try:
            with fits.HDUList.fromstring(body) as hdul:
                data = np.array(hdul[0].data, dtype=np.float32)
        except Exception as exc:  # a truncated or non-FITS answer: a transient server fault, most likely
            raise UpstreamError(f"{where}: the answer is not a FITS image ({exc})", retryable=True) from exc
        if data.ndim == 2:  # a single-band HiPS: the same plane in each colour
            data = np.repeat(data[np.newaxis], 3, axis=0)
        if data.shape != (3, height, width):
            raise UpstreamError(f"{where}: expected a (3, {height}, {width}) cube, got {data.shape}")
        data[:, blank_mask(data)] = np.nan
        return data

    def _report(self, outcome: str, seconds: float, nbytes: int) -> None:
        if self.on_request is None:
            return
        try:
            self.on_request(outcome, seconds, nbytes)
        except Exception:  # metrics must never break a cutout
            log.exception("on_request callback failed")
