"""HTTP validators as a CDN and a Django site answer them: ETag and Last-Modified on
every document, conditional GET (If-None-Match before If-Modified-Since) giving 304
with no body, and single byte ranges (206, 416) with If-Range."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime

from services.universe.replicas.httpbase import Request, Response

_RANGE = re.compile(r"bytes=(\d*)-(\d*)\Z")


def http_date(when: datetime) -> str:
    return format_datetime(when.replace(tzinfo=UTC), usegmt=True)


def page_etag(body: bytes) -> str:
    """Pages and JSON: a digest of the content (a weak one, as Django's gzip leaves it)."""
    return f'W/"{hashlib.blake2b(body, digest_size=12).hexdigest()}"'


def file_etag(modified: datetime, length: int) -> str:
    """Files: nginx's "<mtime hex>-<length hex>", which is not a digest of the bytes."""
    return f'"{int(modified.replace(tzinfo=UTC).timestamp()):x}-{length:x}"'


def _etag_matches(header: str, etag: str) -> bool:
    if header.strip() == "*":
        return True
    opaque = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == opaque for tag in header.split(","))  # weak comparison


def _not_modified_since(header: str, modified: datetime) -> bool:
    try:
        since = parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return False
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return modified.replace(tzinfo=UTC, microsecond=0) <= since


def respond(
    request: Request,
    body: bytes,
    content_type: str,
    etag: str,
    modified: datetime,
    *,
    ranges: bool = False,
    cache_control: str = "max-age=300",
    status: int = 200,
) -> Response:
    headers = {"ETag": etag, "Last-Modified": http_date(modified), "Cache-Control": cache_control}
    if ranges:
        headers["Accept-Ranges"] = "bytes"
    inm = request.headers.get("if-none-match")
    ims = request.headers.get("if-modified-since")
    if status == 200 and (
        (inm is not None and _etag_matches(inm, etag)) or (inm is None and ims and _not_modified_since(ims, modified))
    ):
        return Response(304, b"", headers, content_type)
    spec = request.headers.get("range")
    if ranges and status == 200 and spec and _if_range_holds(request.headers.get("if-range"), etag, modified):
        return _partial(spec, body, content_type, headers)
    return Response(status, body, headers, content_type)


def _if_range_holds(if_range: str | None, etag: str, modified: datetime) -> bool:
    if if_range is None:
        return True
    if if_range.strip().startswith(('"', "W/")):
        return if_range.strip() == etag and not etag.startswith("W/")  # strong comparison only
    return _not_modified_since(if_range, modified)


def _partial(spec: str, body: bytes, content_type: str, headers: dict[str, str]) -> Response:
    match = _RANGE.match(spec.strip())
    size = len(body)
    if not match or match.groups() == ("", ""):
        return Response(200, body, headers, content_type)  # multi-range or garbage: the whole file
    first, last = match.groups()
    if first == "":
        start, end = max(0, size - int(last)), size - 1
    else:
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        return Response(416, b"", {**headers, "Content-Range": f"bytes */{size}"}, content_type)
    return Response(
        206, body[start : end + 1], {**headers, "Content-Range": f"bytes {start}-{end}/{size}"}, content_type
    )
