"""The XML documents of the Gaia TAP replica besides results: UWS job descriptions and
VOSI tables, capabilities and availability.

The table set is the archive's ESA TAP+ flavour (``esatapplus:flags`` on every column),
which astroquery's TapPlus parser requires and pyvo reads as plain VODataService.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from xml.sax.saxutils import escape, quoteattr

from services.universe.replicas import gaia_source
from services.universe.replicas.gaia_formats import FORMATS, Format

UWS_NS = (
    'xmlns:uws="http://www.ivoa.net/xml/UWS/v1.0" xmlns:xlink="http://www.w3.org/1999/xlink" '
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
)
XML_HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n'
JOB_LIFETIME = timedelta(days=3)

_TAP_TYPES = {
    "long": "BIGINT",
    "int": "INTEGER",
    "short": "SMALLINT",
    "double": "DOUBLE",
    "float": "REAL",
    "boolean": "BOOLEAN",
    "char": "VARCHAR",
}
# TAP+ column flags: 1 RA, 2 Dec, 4 flux, 8 magnitude, 16 primary key; +32 when indexed.
_FLAGS = {"ra": 33, "dec": 34, "source_id": 48}


@dataclass
class Job:
    """One UWS job and, once it has run, its result or error."""

    job_id: str
    query: str
    fmt: Format
    maxrec: int | None
    run_id: str | None
    created: datetime
    phase: str = "PENDING"
    started: datetime | None = None
    ended: datetime | None = None
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    error: str | None = None

    @property
    def destruction(self) -> datetime:
        return self.created + JOB_LIFETIME


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _element(name: str, value: str | None) -> str:
    if value is None:
        return f'  <uws:{name} xsi:nil="true"/>\n'
    return f"  <uws:{name}>{escape(value)}</uws:{name}>\n"


def parameters_xml(job: Job, namespaces: bool = False) -> str:
    params = {"query": job.query, "lang": "ADQL", "format": job.fmt.name}
    if job.maxrec is not None:
        params["maxrec"] = str(job.maxrec)
    items = "".join(f"    <uws:parameter id={quoteattr(k)}>{escape(v)}</uws:parameter>\n" for k, v in params.items())
    opening = f"<uws:parameters {UWS_NS}>" if namespaces else "<uws:parameters>"
    return f"  {opening}\n{items}  </uws:parameters>\n"


def results_xml(job: Job, job_url: str, namespaces: bool = False) -> str:
    attrs = f" {UWS_NS}" if namespaces else ""
    if job.phase != "COMPLETED":
        return f"  <uws:results{attrs}/>\n"
    href = escape(job_url + "/results/result")
    return (
        f"  <uws:results{attrs}>\n"
        f'    <uws:result id="result" xlink:type="simple" xlink:href="{href}" mime-type="{job.fmt.content_type}"/>\n'
        "  </uws:results>\n"
    )


def job_xml(job: Job, job_url: str) -> str:
    """The UWS 1.1 job document (what pyvo polls and astroquery's JobSaxParser reads)."""
    parts = [
        XML_HEAD,
        f'<uws:job {UWS_NS} version="1.1">\n',
        _element("jobId", job.job_id),
        _element("runId", job.run_id),
        _element("ownerId", None),
        _element("phase", job.phase),
        _element("quote", None),
        _element("creationTime", iso(job.created)),
        _element("startTime", iso(job.started)),
        _element("endTime", iso(job.ended)),
        _element("executionDuration", "0"),
        _element("destruction", iso(job.destruction)),
        parameters_xml(job),
        results_xml(job, job_url),
    ]
    if job.phase == "ERROR":
        parts.append(
            '  <uws:errorSummary type="fatal" hasDetail="true">\n'
            f"    <uws:message>{escape(job.error or '')}</uws:message>\n  </uws:errorSummary>\n"
        )
    parts.append("</uws:job>\n")
    return "".join(parts)


def job_list_xml(jobs: list[tuple[Job, str]]) -> str:
    refs = "".join(
        f'  <uws:jobref id="{job.job_id}" xlink:href="{escape(url)}"><uws:phase>{job.phase}</uws:phase></uws:jobref>\n'
        for job, url in jobs
    )
    return f'{XML_HEAD}<uws:jobs {UWS_NS} version="1.1">\n{refs}</uws:jobs>\n'


def _column_xml(c: gaia_source.ColumnMeta) -> str:
    flags = _FLAGS.get(c.name, 8 if c.ucd and c.ucd.startswith("phot.mag") else 0)
    lines = [f'   <column std="false" esatapplus:flags="{flags}">', f"    <name>{escape(c.name)}</name>"]
    lines.append(f"    <description>{escape(c.description or '')}</description>")
    lines += [
        f"    <{tag}>{escape(v)}</{tag}>" for tag, v in (("unit", c.unit), ("ucd", c.ucd), ("utype", c.utype)) if v
    ]
    lines.append(f'    <dataType xsi:type="vod:TAPType">{_TAP_TYPES[c.datatype]}</dataType>')
    if flags >= 32:
        lines.append("    <flag>indexed</flag>")
    if c.name == "source_id":
        lines.append("    <flag>primary</flag>")
    return "\n".join([*lines, "   </column>\n"])


def tables_xml() -> str:
    return (
        f"{XML_HEAD}"
        '<vod:tableset xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xmlns:vod="http://www.ivoa.net/xml/VODataService/v1.1" xsi:type="vod:TableSet" '
        'xmlns:esatapplus="http://esa.int/xml/EsaTapPlus">\n'
        ' <schema esatapplus:public="true">\n  <name>gaiadr3</name>\n'
        "  <description>Gaia data release 3 (local replica, served from the sky model)</description>\n"
        '  <table type="base_table" esatapplus:flags="0">\n'
        f"   <name>{gaia_source.TABLE}</name>\n"
        "   <description>Gaia DR3 source catalogue</description>\n"
        + "".join(_column_xml(c) for c in gaia_source.columns())
        + "  </table>\n </schema>\n</vod:tableset>\n"
    )


def capabilities_xml(base: str) -> str:
    base = escape(base)

    def vosi(kind: str) -> str:
        return (
            f' <capability standardID="ivo://ivoa.net/std/VOSI#{kind}">\n'
            f'  <interface xsi:type="vs:ParamHTTP"><accessURL use="full">{base}/{kind}</accessURL></interface>\n'
            " </capability>\n"
        )

    formats = "".join(
        f"  <outputFormat><mime>{f.content_type}</mime><alias>{f.name}</alias></outputFormat>\n"
        for f in FORMATS.values()
    )
    return (
        f"{XML_HEAD}"
        '<vosi:capabilities xmlns:vosi="http://www.ivoa.net/xml/VOSICapabilities/v1.0" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xmlns:vs="http://www.ivoa.net/xml/VODataService/v1.1" xmlns:tr="http://www.ivoa.net/xml/TAPRegExt/v1.0">\n'
        ' <capability standardID="ivo://ivoa.net/std/TAP" xsi:type="tr:TableAccess">\n'
        f'  <interface xsi:type="vs:ParamHTTP" role="std" version="1.1">'
        f'<accessURL use="base">{base}</accessURL></interface>\n'
        '  <language><name>ADQL</name><version ivo-id="ivo://ivoa.net/std/ADQL#v2.0">2.0</version></language>\n'
        f"{formats} </capability>\n"
        + vosi("capabilities")
        + vosi("availability")
        + vosi("tables")
        + "</vosi:capabilities>\n"
    )


def availability_xml() -> str:
    return (
        f"{XML_HEAD}"
        '<vosi:availability xmlns:vosi="http://www.ivoa.net/xml/VOSIAvailability/v1.0">\n'
        " <vosi:available>true</vosi:available>\n"
        " <vosi:note>local replica of the Gaia archive TAP service</vosi:note>\n"
        "</vosi:availability>\n"
    )
