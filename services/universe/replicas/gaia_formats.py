"""The result and error documents of the Gaia TAP replica, in the archive's formats.

FORMAT values as astroquery.gaia documents them: ``votable`` (BINARY2), ``votable_plain``
(TABLEDATA), ``votable_gzip`` (BINARY2, gzip-compressed), ``fits`` and ``ecsv``
(gzip-compressed), ``csv`` and ``json`` (plain); TAP MIME types are accepted too.
Compressed bodies carry ``Content-Encoding: gzip``: astroquery's raw http.client reads
the gzip bytes and inflates them itself, requests-based clients (pyvo) inflate them
transparently. Every writer is deterministic (gzip with mtime 0), so the same query gives
the same bytes.
"""

from __future__ import annotations

import gzip
import io
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from astropy.io.votable.exceptions import W50
from astropy.io.votable.tree import Field, Info, Param, Resource, TableElement, VOTableFile
from astropy.table import MaskedColumn, Table

from services.universe.replicas.gaia_source import ColumnMeta

CAPTION = (
    "If you use public Gaia DR3 data in your paper, please take note of our guide on how to acknowledge "
    "and cite Gaia DR3: https://gea.esac.esa.int/archive/documentation/GDR3/Miscellaneous/"
    "sec_credit_and_citation_instructions/"
)
VOTABLE_TYPE = "application/x-votable+xml"


@dataclass
class QueryResult:
    """A finished query: its columns (described) and rows (masked where NULL)."""

    columns: list[ColumnMeta]
    table: Table  # one column per entry of ``columns``, same names and order
    query: str
    job_id: str
    overflow: bool = False  # MAXREC cut the rows short (TAP: QUERY_STATUS OVERFLOW)
    extra_infos: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Format:
    name: str
    content_type: str
    extension: str
    compressed: bool
    write: Callable[[QueryResult], bytes]


def _masked(table: Table, name: str) -> tuple[np.ndarray, np.ndarray]:
    col = table[name]
    mask = np.asarray(col.mask) if isinstance(col, MaskedColumn) else np.zeros(len(col), dtype=bool)
    return np.asarray(col), mask


def _votable(result: QueryResult, serialization: str) -> bytes:
    vot = VOTableFile(version="1.4")
    resource = Resource()
    resource.type = "results"
    vot.resources.append(resource)
    infos = [
        ("QUERY_STATUS", "OK"),
        ("QUERY", result.query),
        ("CAPTION", CAPTION),
        ("CITATION", ""),
        ("JOBID", result.job_id),
        *result.extra_infos,
    ]
    for name, value in infos:
        resource.infos.append(Info(name=name, value=value))
    resource.params.append(
        Param(vot, name="RELEASE", ID="GaiaRelease", datatype="char", arraysize="*", value="Gaia DR3")
    )
    element = TableElement(vot)
    resource.tables.append(element)
    for meta in result.columns:
        f = Field(
            vot,
            name=meta.name,
            ID=meta.id,
            datatype=meta.datatype,
            arraysize=meta.arraysize,
            unit=meta.unit,
            ucd=meta.ucd,
            utype=meta.utype,
        )
        f.description = meta.description
        element.fields.append(f)
    element.create_arrays(len(result.table))
    for meta, key in zip(result.columns, element.array.dtype.names, strict=True):
        data, mask = _masked(result.table, meta.name)
        element.array[key] = data
        element.array.mask[key] = mask
    if result.overflow:
        # TAP 1.1 §4.4: the OVERFLOW status follows the table.
        resource.infos.append(Info(name="QUERY_STATUS", value="OVERFLOW"))
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # The archive's own unit strings (e.g. "log(cm.s**-2)") are not all valid VOUnits:
        # they are written as they are, like the archive does.
        warnings.simplefilter("ignore", W50)
        vot.to_xml(buf, tabledata_format=serialization)
    return buf.getvalue()


def _float_value(value: Any, datatype: str) -> Any:
    if datatype == "float":
        return float(str(np.float32(value)))  # the archive prints floats with their shortest repr
    return float(value)


def _shortest_float32(value: Any) -> str:
    return str(np.float32(value))


def _json(result: QueryResult) -> bytes:
    metadata = [
        {
            "name": m.name,
            "datatype": m.datatype,
            "xtype": None,
            "arraysize": m.arraysize,
            "description": m.description,
            "unit": m.unit,
            "ucd": m.ucd,
            "utype": m.utype,
        }
        for m in result.columns
    ]
    columns = [_masked(result.table, m.name) for m in result.columns]
    rows = []
    for i in range(len(result.table)):
        row: list[Any] = []
        for meta, (data, mask) in zip(result.columns, columns, strict=True):
            if mask[i] or (meta.datatype in ("float", "double") and not np.isfinite(data[i])):
                row.append(None)
            elif meta.datatype in ("float", "double"):
                row.append(_float_value(data[i], meta.datatype))
            else:
                row.append(data[i].item() if hasattr(data[i], "item") else data[i])
        rows.append(row)
    lines = ['{"metadata":', "[", ",\n".join(json.dumps(m) for m in metadata), "],", '"data":', "["]
    lines.append(",\n".join(json.dumps(r) for r in rows))
    lines += ["]", "}"]
    return ("\n".join(lines) + "\n").encode()


def _astropy_table(result: QueryResult, text: bool) -> Table:
    out = Table()
    for meta in result.columns:
        data, mask = _masked(result.table, meta.name)
        col = MaskedColumn(data, mask=mask, name=meta.name, unit=meta.unit, description=meta.description)
        col.meta.update({k: v for k, v in (("ucd", meta.ucd), ("utype", meta.utype)) if v})
        if text and meta.datatype == "float":
            col.info.format = _shortest_float32
        out[meta.name] = col
    return out


def _astropy_write(result: QueryResult, fmt: str) -> bytes:
    buf = io.BytesIO() if fmt == "fits" else io.StringIO()
    _astropy_table(result, text=fmt == "ascii.csv").write(buf, format=fmt)
    value = buf.getvalue()
    return value if isinstance(value, bytes) else value.encode()


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("votable", VOTABLE_TYPE, ".vot", False, lambda r: _votable(r, "binary2")),
        Format("votable_plain", VOTABLE_TYPE, ".vot", False, lambda r: _votable(r, "tabledata")),
        Format("votable_gzip", VOTABLE_TYPE, ".vot.gz", True, lambda r: _votable(r, "binary2")),
        Format("csv", "text/csv", ".csv", False, lambda r: _astropy_write(r, "ascii.csv")),
        Format("json", "application/json", ".json", False, _json),
        Format("fits", "application/fits", ".fits.gz", True, lambda r: _astropy_write(r, "fits")),
        Format("ecsv", "text/plain", ".ecsv.gz", True, lambda r: _astropy_write(r, "ascii.ecsv")),
    )
}

_ALIASES = {
    "": "votable",
    "votable/td": "votable_plain",
    "votable/b2": "votable",
    "application/x-votable+xml": "votable",
    "text/xml": "votable",
    "application/xml": "votable",
    "votable_binary2": "votable",
    "text/csv": "csv",
    "application/json": "json",
    "application/fits": "fits",
    "text/ecsv": "ecsv",
}


def resolve_format(value: str | None) -> Format | None:
    """The Format for a FORMAT/RESPONSEFORMAT value, or None when unknown."""
    key = (value or "").strip().lower()
    key = _ALIASES.get(key.split(";")[0].strip(), key)
    return FORMATS.get(key)


def render(result: QueryResult, fmt: Format) -> tuple[bytes, dict[str, str]]:
    """(body, extra headers) of a result in the given format."""
    body = fmt.write(result)
    headers = {"Content-Disposition": f'attachment;filename="{result.job_id}-result{fmt.extension}"'}
    if fmt.compressed:
        body = gzip.compress(body, mtime=0)
        headers["Content-Encoding"] = "gzip"
    return body, headers


def _xml_text(text: str) -> str:
    # The archive escapes only what XML requires ("&lt;EOF>" appears in its real messages).
    return text.replace("&", "&amp;").replace("<", "&lt;")


def error_votable(message: str, http_status: int) -> bytes:
    """A TAP error document. astroquery finds the message between the exact
    ``<INFO name="QUERY_STATUS" value="ERROR">`` and the next ``</INFO>``."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3">\n'
        '<RESOURCE type="results">\n'
        f'<INFO name="QUERY_STATUS" value="ERROR">\n{_xml_text(message)}\n</INFO>\n'
        f'<INFO name="HttpErrorCode" value="{http_status}"/>\n'
        "</RESOURCE>\n"
        "</VOTABLE>\n"
    ).encode()
