"""Reading the crawled archive back: meta.json documents as API messages."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from services.api import common_pb2, crawler_pb2
from services.crawler.sites import SOURCES
from services.crawler.state import ARCHIVE, meta_key
from services.runtime.errors import InvalidArgument, NotFound
from services.runtime.objectstore import ObjectStore

_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
SOURCE_BY_ENUM = {crawler_pb2.SOURCE_ESAHUBBLE: "esahubble", crawler_pb2.SOURCE_ESAWEBB: "esawebb"}
ENUM_BY_SOURCE = {v: k for k, v in SOURCE_BY_ENUM.items()}


def source_name(value: int, field: str = "source") -> str:
    if value not in SOURCE_BY_ENUM:
        raise InvalidArgument(field, f"unknown source {value}: use SOURCE_ESAHUBBLE or SOURCE_ESAWEBB")
    return SOURCE_BY_ENUM[value]


def sources_from_request(values: list[int]) -> list[str]:
    """Empty means all; duplicates dropped, order kept."""
    if not values:
        return list(SOURCES)
    names: list[str] = []
    for value in values:
        name = source_name(value, "sources")
        if name not in names:
            names.append(name)
    return names


def _timestamp(iso: str | None) -> Timestamp | None:
    if not iso:
        return None
    ts = Timestamp()
    ts.FromDatetime(datetime.fromisoformat(iso))
    return ts


def meta_to_proto(meta: dict[str, Any]) -> crawler_pb2.Observation:
    center = meta.get("center") or {}
    fov = meta.get("fov_arcmin") or {}
    size = meta.get("pixel_size") or {}
    footprint = common_pb2.Footprint(
        center=common_pb2.SkyPosition(ra_deg=center.get("ra_deg", 0.0), dec_deg=center.get("dec_deg", 0.0)),
        fov_x_arcmin=fov.get("x", 0.0),
        fov_y_arcmin=fov.get("y", 0.0),
        north_angle_deg=meta.get("north_angle_deg") or 0.0,
        grid=common_pb2.PixelGrid(width=size.get("width", 0), height=size.get("height", 0)),
        wcs_header_json=json.dumps(meta["wcs"], sort_keys=True) if meta.get("wcs") else "",
    )
    images = {
        name: common_pb2.ObjectRef(
            bucket=ARCHIVE, key=entry["key"], sha256=entry.get("sha256", ""), size=entry.get("bytes", 0)
        )
        for name, entry in (meta.get("images") or {}).items()
    }
    return crawler_pb2.Observation(
        key=crawler_pb2.ObservationKey(source=ENUM_BY_SOURCE[meta["source"]], image_id=meta["id"]),
        title=meta.get("title", ""),
        page_url=meta.get("page_url", ""),
        release_date=_timestamp(meta.get("release_date")),
        pixel_size=common_pb2.PixelGrid(width=size.get("width", 0), height=size.get("height", 0)),
        footprint=footprint,
        pixel_scale_arcsec=meta.get("pixel_scale_arcsec") or 0.0,
        category=meta.get("category", ""),
        credit=meta.get("credit", ""),
        license=meta.get("licence", ""),
        images=images,
        withdrawn=bool(meta.get("withdrawn")),
        distance=meta.get("distance", ""),
        constellation=meta.get("constellation", ""),
        value_sources={k: str(v) for k, v in (meta.get("value_sources") or {}).items()},
    )


def get_meta(store: ObjectStore, source: str, image_id: str) -> dict[str, Any]:
    if not _ID_RE.match(image_id or ""):
        raise InvalidArgument("image_id", f"{image_id!r} is not an archive image id (letters, digits, '-', '_')")
    key = meta_key(source, image_id)
    if not store.exists(ARCHIVE, key):
        raise NotFound(f"no observation {source}/{image_id} in the archive: not crawled yet, or not usable")
    return store.get_json(ARCHIVE, key)


def iter_meta(store: ObjectStore, sources: list[str]) -> Iterator[dict[str, Any]]:
    for source in sources:
        for info in store.list(ARCHIVE, f"{source}/"):
            if info.key.endswith("/meta.json"):
                yield store.get_json(ARCHIVE, info.key)


def matches(meta: dict[str, Any], request: crawler_pb2.ListObservationsRequest) -> bool:
    if meta.get("withdrawn") and not request.include_withdrawn:
        return False
    if request.category_prefix and not meta.get("category", "").lower().startswith(request.category_prefix.lower()):
        return False
    released = _timestamp(meta.get("release_date"))
    when = released.ToDatetime() if released is not None else None
    if request.HasField("released_after") and (when is None or when < request.released_after.ToDatetime()):
        return False
    return not (request.HasField("released_before") and (when is None or when > request.released_before.ToDatetime()))
