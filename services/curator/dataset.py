"""Immutable, versioned training datasets in the ``datasets`` bucket.

A build reads every verdict, keeps the usable pairs of the asked surveys whose observation is
neither withdrawn nor blacklisted *now*, splits them by sky region (splits.py: HEALPix cells,
no field in two splits) and writes, under ``{name}/{version}/``:

- ``manifest.jsonl``  one line per pair, sorted: object references (with sha256) of the outreach
  image, the survey cutout (the corrected one when alignment was corrected) and their valid-pixel
  masks, the WCS of each side under which their pixels line up, the measured alignment, split,
  HEALPix cells, category and both credit lines;
- ``tiles.jsonl``     the tile index: lower-left corners of training crops on each survey grid
  (crops with at least TILE_MIN_VALID of valid pixels on both sides);
- ``credits.json`` and ``CREDITS.md``  every image's credit line (CC BY 4.0) and the surveys';
- ``summary.json`` and ``plots/*.png``  counts by split, source, category, survey and rejection
  reason, the split report; category balance, field-of-view and pixel-scale distributions, a sky
  map, examples of each rejection reason;
- ``dataset.json`` last: the commit. A version without it is not published and is never read.

Builds are deterministic: the same verdicts, blacklist and parameters give byte-identical
files, and the same digest; a build whose digest equals the latest version's publishes nothing
new. A killed build resumes with the version it had chosen (kept in the job's checkpoint).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from astropy.io import fits

from services.curator import blacklist, plots, splits, verdicts
from services.curator.evaluate import REASON_CODES, pixel_scale_arcsec, reason_code
from services.curator.evaluation import ARCHIVE, decode_image
from services.cutouts.geometry import header_wcs
from services.runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from services.runtime.objectstore import ObjectNotFound, ObjectStore

BUCKET = "datasets"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
VERSION_RE = re.compile(r"^v[1-9][0-9]*$")
TILE_MIN_VALID = 0.9
LICENCE = "CC BY 4.0"
EXAMPLES_PER_REASON = 4
CONTENT_TYPES = {"png": "image/png", "md": "text/markdown", "json": "application/json", "jsonl": "application/jsonl"}


@dataclass(frozen=True)
class BuildParams:
    name: str
    surveys: tuple[str, ...]
    validation_fraction: float
    test_fraction: float
    seed: int
    tile_px: int  # crop side on the survey grid
    tile_stride_px: int
    healpix_order: int | None  # None: chosen from the field sizes

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "surveys": list(self.surveys),
            "validation_fraction": self.validation_fraction,
            "test_fraction": self.test_fraction,
            "seed": self.seed,
            "tile_px": self.tile_px,
            "tile_stride_px": self.tile_stride_px,
            "healpix_order": self.healpix_order,
        }


def validate_name(name: str) -> str:
    if not NAME_RE.match(name or ""):
        raise InvalidArgument(
            "name", f"{name!r} is not a dataset name: 1-63 of a-z 0-9 . _ -, starting with a letter or digit"
        )
    return name


def split_ref(text: str) -> tuple[str, str]:
    """ "NAME" or "NAME@VERSION" -> (name, version or "")."""
    name, _, version = text.partition("@")
    return name, version


# -- reading the store ------------------------------------------------------------------------


def _read_observation(store: ObjectStore, key: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    document = store.get_json(verdicts.BUCKET, key)
    try:
        meta = store.get_json(ARCHIVE, f"{document['source']}/{document['image_id']}/meta.json")
    except ObjectNotFound:
        meta = None
    return document, meta


def collect(store: ObjectStore) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    """Every verdict with its observation's meta.json, sorted by (source, image_id)."""
    keys = sorted(k for k in store.list_keys(verdicts.BUCKET, "verdicts/") if k.endswith(".json"))
    with ThreadPoolExecutor(8, thread_name_prefix="dataset-read") as pool:
        return list(pool.map(lambda k: _read_observation(store, k), keys))


# -- the pure part: verdicts -> manifest --------------------------------------------------------


def _radius_deg(meta: dict[str, Any]) -> float:
    fov = meta.get("fov_arcmin") or {}
    return max(math.hypot(float(fov.get("x") or 0), float(fov.get("y") or 0)) / 2 / 60, 1e-4)


def _scale_arcsec(wcs_header: dict[str, Any]) -> float:
    return pixel_scale_arcsec(header_wcs(wcs_header, 0, 0)[0])


@dataclass
class Selection:
    """What a build keeps and why the rest was left out."""

    kept: list[dict[str, Any]]  # {"document", "meta", "survey", "pair"}
    rejected: list[dict[str, Any]]  # {"document", "meta", "survey", "reason"}
    not_evaluated: int


def select(
    observations: list[tuple[dict[str, Any], dict[str, Any] | None]], black: dict[str, Any], surveys: tuple[str, ...]
) -> Selection:
    kept, rejected, missing = [], [], 0
    for document, meta in observations:
        for survey in surveys:
            pair = document.get("pairs", {}).get(survey)
            if pair is None:
                missing += 1
                continue
            item = {"document": document, "meta": meta, "survey": survey, "pair": pair}
            if meta is None or meta.get("withdrawn"):
                rejected.append(item | {"reason": "withdrawn: the observation left the archive"})
            elif why := blacklist.reason_for(black, document["source"], document["image_id"]):
                rejected.append(item | {"reason": f"blacklisted: {why}"})
            elif not pair["usable"]:
                rejected.append(item | {"reason": pair["reasons"][0] if pair["reasons"] else "rejected"})
            else:
                kept.append(item)
    return Selection(kept, rejected, missing)


def assign(selection: Selection, params: BuildParams) -> splits.Splits:
    fields = {}
    for item in selection.kept:
        meta, doc = item["meta"], item["document"]
        ident = f"{doc['source']}/{doc['image_id']}"
        centre = meta.get("center") or {}
        fields[ident] = splits.Field(ident, float(centre["ra_deg"]), float(centre["dec_deg"]), _radius_deg(meta))
    if not fields:
        raise FailedPrecondition(
            "no usable pair to build a dataset from: evaluate pairs first (prettyspace curate run), "
            f"and check the surveys asked for ({', '.join(params.surveys)})"
        )
    return splits.assign_splits(
        list(fields.values()), params.validation_fraction, params.test_fraction, params.seed, params.healpix_order
    )


def manifest_line(item: dict[str, Any], split: str, cells: list[int], order: int) -> dict[str, Any]:
    doc, meta, pair, survey = item["document"], item["meta"], item["pair"], item["survey"]
    image = doc["outreach"]["image"]
    cutout = pair["cutout"]
    return {
        "pair": f"{doc['source']}/{doc['image_id']}@{survey}",
        "source": doc["source"],
        "image_id": doc["image_id"],
        "survey": survey,
        "split": split,
        "healpix": {"order": order, "cells": cells},
        "category": meta.get("category") or "",
        "title": meta.get("title") or "",
        "credit": meta.get("credit") or "",
        "survey_credit": cutout.get("credit", ""),
        "outreach": {k: image[k] for k in ("bucket", "key", "sha256", "width", "height", "wcs")},
        "outreach_mask": doc["outreach"].get("mask"),
        "survey_cutout": {
            "bucket": cutout["bucket"],
            "key": cutout["key"],
            "sha256": cutout["sha256"],
            "wcs": cutout["wcs"],  # the grid these pixels share with the outreach image's WCS
            "corrected": bool(pair.get("corrected_cutout")),
        },
        "survey_mask": pair.get("survey_mask"),
        "alignment": pair.get("alignment"),
        "residual_alignment": pair.get("residual_alignment"),
        "flags": pair.get("flags", []),
        "scores": pair.get("scores", {}),
        "verdict": {"bucket": verdicts.BUCKET, "key": verdicts.verdict_key(doc["source"], doc["image_id"])},
    }


def tiles_line(line: dict[str, Any], mask: np.ndarray | None, tile: int, stride: int) -> dict[str, Any]:
    wcs = line["survey_cutout"]["wcs"]
    width, height = int(wcs["NAXIS1"]), int(wcs["NAXIS2"])
    corners = splits.tile_index(width, height, tile, stride, mask, TILE_MIN_VALID)
    return {"pair": line["pair"], "split": line["split"], "tile_px": tile, "corners": [list(c) for c in corners]}


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(line, sort_keys=True, separators=(",", ":")) + "\n" for line in lines).encode()


def credits_document(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """One entry per outreach image (an image paired with two surveys is credited once) and per survey."""
    images = {line["pair"].split("@")[0]: line["credit"] for line in lines}
    surveys = sorted({(line["survey"], line["survey_credit"]) for line in lines})
    return {
        "images": [
            {"observation": obs, "credit": credit, "licence": LICENCE} for obs, credit in sorted(images.items())
        ],
        "surveys": [{"survey": s, "credit": c} for s, c in surveys],
    }


def credits_markdown(document: dict[str, Any], ref: str) -> bytes:
    out = [f"# Credits of dataset {ref}", "", "## Outreach images (ESA/Hubble, ESA/Webb; CC BY 4.0)", ""]
    out += [f"- `{i['observation']}`: {i['credit']}" for i in document["images"]]
    out += ["", "## Survey pixels", ""]
    out += [f"- {s['survey']}: {s['credit']}" for s in document["surveys"]]
    return ("\n".join(out) + "\n").encode()


def summary_document(
    lines: list[dict[str, Any]], selection: Selection, report: splits.SplitReport, params: BuildParams, tiles: int
) -> dict[str, Any]:
    by: dict[str, Counter] = defaultdict(Counter)
    for line in lines:
        by["split"][line["split"]] += 1
        by["source"][line["source"]] += 1
        by["survey"][line["survey"]] += 1
        by["category"][line["category"] or "(none)"] += 1
        for flag in line["flags"]:
            by["flag"][reason_code(flag)] += 1
    rejected = Counter(reason_code(r["reason"]) for r in selection.rejected)
    return {
        "params": params.to_json(),
        "pairs": len(lines),
        "observations": len({line["pair"].split("@")[0] for line in lines}),
        "tiles": tiles,
        "counts": {k: dict(sorted(v.items())) for k, v in sorted(by.items())},
        "rejected": dict(sorted(rejected.items())),
        "rejected_codes": [c for c in REASON_CODES if c in rejected] + sorted(set(rejected) - set(REASON_CODES)),
        "not_evaluated": selection.not_evaluated,
        "splits": {
            "healpix_order": report.order,
            "order_chosen_automatically": report.order_chosen_automatically,
            "cell_size_deg": report.cell_size_deg,
            "components": report.n_components,
            "largest_component_fields": report.largest_component_fields,
            "requested": report.requested,
            "achieved": report.achieved,
            "fields": report.counts,
        },
    }


def digest(files: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return h.hexdigest()


# -- plots ------------------------------------------------------------------------------------------


def _examples(
    store: ObjectStore, rejected: list[dict[str, Any]], per_reason: int
) -> dict[str, list[tuple[np.ndarray, str]]]:
    """Thumbnails of the first few rejected pairs of each reason (the outreach image, or the survey
    cutout when the survey is what was wrong)."""
    out: dict[str, list[tuple[np.ndarray, str]]] = {}
    for item in rejected:
        code = reason_code(item["reason"])
        if len(out.setdefault(code, [])) >= per_reason:
            continue
        doc, pair = item["document"], item["pair"]
        label = f"{doc['source']}/{doc['image_id']} {item['survey']}"
        try:
            cutout = pair.get("cutout")
            if code == "survey-colour" and cutout:
                with fits.open(io.BytesIO(store.get_bytes(cutout["bucket"], cutout["key"]))) as hdul:
                    cube = np.nan_to_num(np.asarray(hdul[0].data, dtype=np.float32)).clip(0, 255)
                image = cube.astype(np.uint8).transpose(1, 2, 0)
            elif doc["outreach"].get("image"):
                ref = doc["outreach"]["image"]
                image = decode_image(store.get_bytes(ref["bucket"], ref["key"]))
            else:
                continue
        except ObjectNotFound:
            continue
        out[code].append((plots.thumbnail(image), label))
    return {k: v for k, v in out.items() if v}


def plot_files(
    store: ObjectStore, lines: list[dict[str, Any]], selection: Selection, order: int, ref: str
) -> dict[str, bytes]:
    by_split_cat: dict[str, dict[str, int]] = defaultdict(dict)
    fov: dict[str, list[float]] = defaultdict(list)
    scale: dict[str, list[float]] = defaultdict(list)
    points, cells = [], defaultdict(set)
    metas = {f"{i['document']['source']}/{i['document']['image_id']}": i["meta"] for i in selection.kept}
    seen = set()
    for line in lines:
        split, cat = line["split"], (line["category"] or "(none)").split(" : ")[0]
        by_split_cat[split][cat] = by_split_cat[split].get(cat, 0) + 1
        obs = line["pair"].split("@")[0]
        if obs in seen:
            continue
        seen.add(obs)
        out = line["outreach"]
        s = _scale_arcsec(out["wcs"])
        scale[split].append(s)
        fov[split].append(math.hypot(out["width"], out["height"]) * s / 60 / math.sqrt(2))
        centre = metas[obs]["center"]
        points.append((float(centre["ra_deg"]), float(centre["dec_deg"]), split))
        cells[split].update(line["healpix"]["cells"])
    return {
        "plots/category_balance.png": plots.category_balance(dict(by_split_cat), "Category balance", dataset=ref),
        "plots/distributions.png": plots.distributions(
            dict(fov), dict(scale), "Fields of view and pixel scales", dataset=ref
        ),
        "plots/sky_map.png": plots.sky_map(
            sorted(points),
            "Pairs on the sky by split (HEALPix cells of each split)",
            {k: sorted(v) for k, v in cells.items()},
            2**order,
            dataset=ref,
        ),
        "plots/rejections.png": plots.rejection_examples(
            _examples(store, selection.rejected, EXAMPLES_PER_REASON), "Rejected pairs by reason", dataset=ref
        ),
    }


# -- versions -----------------------------------------------------------------------------------------


def versions(store: ObjectStore, name: str) -> list[dict[str, Any]]:
    try:
        return store.get_json(BUCKET, f"{name}/versions.json")["versions"]
    except ObjectNotFound:
        return []


def resolve(store: ObjectStore, name: str, version: str = "") -> dict[str, Any]:
    """The published dataset.json of NAME@VERSION (latest when version is empty)."""
    validate_name(name)
    if version and not VERSION_RE.match(version):
        raise InvalidArgument("version", f"{version!r} is not a version (v1, v2, ...; empty for the latest)")
    known = versions(store, name)
    if not known:
        raise NotFound(f"no dataset {name!r}: build it first (prettyspace dataset build {name})")
    version = version or known[-1]["version"]
    try:
        return store.get_json(BUCKET, f"{name}/{version}/dataset.json")
    except ObjectNotFound:
        have = ", ".join(v["version"] for v in known)
        raise NotFound(f"dataset {name} has no version {version} (it has {have})") from None


def build(
    store: ObjectStore,
    params: BuildParams,
    chosen_version: str = "",
    on_progress: Callable[[str, int, int], None] = lambda stage, done, total: None,
    on_version: Callable[[str, str], None] = lambda version, digest: None,
) -> dict[str, Any]:
    """Build (or resume building) a version; returns {"version", "digest", "new", "counts"}."""
    on_progress("read verdicts", 0, 1)
    observations = collect(store)
    black = blacklist.load(store)
    selection = select(observations, black, params.surveys)
    assignment = assign(selection, params)
    order = assignment.report.order
    lines = []
    for item in selection.kept:
        doc, meta = item["document"], item["meta"]
        cone = (float(meta["center"]["ra_deg"]), float(meta["center"]["dec_deg"]), _radius_deg(meta))
        cells = sorted(splits.cells_of_footprint(cone, order))
        lines.append(manifest_line(item, assignment[f"{doc['source']}/{doc['image_id']}"], cells, order))
    lines.sort(key=lambda line: line["pair"])
    on_progress("tile index", 0, len(lines))
    tile_lines = []
    for i, line in enumerate(lines):
        mask_ref = line["survey_mask"]
        mask = verdicts.mask_from_png(store.get_bytes(mask_ref["bucket"], mask_ref["key"])) if mask_ref else None
        tile_lines.append(tiles_line(line, mask, params.tile_px, params.tile_stride_px))
        on_progress("tile index", i + 1, len(lines))
    n_tiles = sum(len(t["corners"]) for t in tile_lines)
    credits = credits_document(lines)
    summary = summary_document(lines, selection, assignment.report, params, n_tiles)
    files = {
        "manifest.jsonl": jsonl(lines),
        "tiles.jsonl": jsonl(tile_lines),
        "credits.json": json.dumps(credits, indent=1, sort_keys=True, ensure_ascii=False).encode(),
        "summary.json": json.dumps(summary, indent=1, sort_keys=True).encode(),
    }
    content = digest(files)
    known = versions(store, params.name)
    if known and known[-1]["digest"] == content and not chosen_version:
        return {"version": known[-1]["version"], "digest": content, "new": False, "counts": summary["counts"]["split"]}
    version = chosen_version or f"v{len(known) + 1}"
    on_version(version, content)
    prefix = f"{params.name}/{version}/"
    if store.exists(BUCKET, prefix + "dataset.json"):  # published by the attempt that was killed
        document = store.get_json(BUCKET, prefix + "dataset.json")
        if document["digest"] != content:
            raise FailedPrecondition(f"dataset {params.name}@{version} is already published with other content")
    else:
        ref = f"{params.name}@{version}"
        on_progress("plots", 0, 1)
        files["CREDITS.md"] = credits_markdown(credits, ref)
        files.update(plot_files(store, lines, selection, order, ref))
        refs = {}
        for i, (name, data) in enumerate(sorted(files.items())):
            kind = CONTENT_TYPES[name.rsplit(".", 1)[-1]]
            refs[name] = store.put_bytes(BUCKET, prefix + name, data, kind).ref()
            on_progress("write", i + 1, len(files))
        document = {
            "name": params.name,
            "version": version,
            "digest": content,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "params": params.to_json(),
            "counts": summary["counts"]["split"],
            "pairs": summary["pairs"],
            "files": refs,
        }
        store.put_json(BUCKET, prefix + "dataset.json", document)
    if not any(v["version"] == version for v in known):
        known.append({"version": version, "digest": content, "created": document["created"]})
        store.put_json(BUCKET, f"{params.name}/versions.json", {"versions": known})
    return {"version": version, "digest": content, "new": True, "counts": summary["counts"]["split"]}
