"""A stand-in for the Gaia archive's TAP service (https://gea.esac.esa.int/tap-server/tap),
answering ADQL on ``gaiadr3.gaia_source`` from the sky model's stars.

Paths and behaviour follow what ``astroquery.gaia`` (TapPlus) and ``pyvo`` use:

- ``POST|GET /tap-server/tap/sync``: REQUEST=doQuery, LANG=ADQL, QUERY, FORMAT (or
  RESPONSEFORMAT), MAXREC. 200 with the result; a bad or unsupported query gives 400 and
  a VOTable with ``<INFO name="QUERY_STATUS" value="ERROR">`` (the archive's error shape,
  whose message astroquery extracts).
- ``POST /tap-server/tap/async`` creates a UWS job (303 to ``async/{jobid}``, ids like the
  archive's ``1712337806100O``) and runs it at once with PHASE=RUN. The job answers
  ``async/{id}`` (UWS 1.1 XML), ``/phase`` (GET text, POST RUN/ABORT), ``/results/result``,
  ``/error``, ``/parameters``, ``/quote``, ``/executionduration``, ``/destruction``,
  ``/owner``; DELETE or POST ACTION=DELETE removes it. A failed job is phase ERROR with
  the error VOTable at ``/error`` (and at ``/results/result``, where astroquery looks
  first, before asking ``/error``).
- VOSI ``/tables`` (``?tables=`` too), ``/capabilities``, ``/availability``, and the
  archive's ``notification?action=GetNotifications`` that ``GaiaClass()`` calls when it is
  constructed (empty: no announcements).

Jobs run inside the request that starts them: a replica query takes well under a second,
and a job already COMPLETED at the first poll is something real clients handle anyway.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from http import HTTPStatus

from services.universe.replicas import adql, gaia_documents, gaia_source
from services.universe.replicas.gaia_documents import Job
from services.universe.replicas.gaia_formats import Format, error_votable, render, resolve_format
from services.universe.replicas.gaia_query import GaiaQueryEngine, StarSource
from services.universe.replicas.httpbase import ReplicaServer, Request, Response

TAP = "/tap-server/tap"
_JOB = TAP + r"/async/(?P<job>[0-9A-Za-z]+)"
MAX_JOBS = 500  # the oldest jobs are forgotten beyond this (the archive deletes them after days)
_XML = "text/xml;charset=UTF-8"


def _error(message: str, status: int = HTTPStatus.BAD_REQUEST) -> Response:
    return Response(status, error_votable(message, status), content_type=_XML)


def _see_other(location: str) -> Response:
    return Response(HTTPStatus.SEE_OTHER, b"", {"Location": location}, content_type="text/plain")


class TapRequestError(Exception):
    """A request the service refuses before any query runs (bad LANG, FORMAT, MAXREC...)."""


def _tap_params(request: Request) -> tuple[str, Format, int | None]:
    """(query, format, maxrec) from the TAP parameters of a request."""
    lang = request.arg("LANG") or "ADQL"
    if not lang.upper().startswith("ADQL"):
        raise TapRequestError(f"Unsupported query language: {lang}")
    req = request.arg("REQUEST") or "doQuery"
    if req.lower() != "doquery":
        raise TapRequestError(f"Unsupported REQUEST: {req}")
    fmt_name = request.arg("RESPONSEFORMAT") or request.arg("FORMAT")
    fmt = resolve_format(fmt_name)
    if fmt is None:
        raise TapRequestError(f"Unsupported output format: {fmt_name}")
    maxrec_text = request.arg("MAXREC") or ""
    maxrec = None
    if maxrec_text:
        if not maxrec_text.isdigit():
            raise TapRequestError(f"Invalid MAXREC: {maxrec_text}")
        maxrec = int(maxrec_text)
    query = request.arg("QUERY") or ""
    if not query.strip():
        raise TapRequestError("Missing required parameter: QUERY")
    return query, fmt, maxrec


class GaiaTapReplica(ReplicaServer):
    """The Gaia TAP replica. ``GaiaClass(gaia_tap_server=replica.url, gaia_data_server=replica.url)``
    and ``pyvo.dal.TAPService(replica.url + "/tap-server/tap")`` talk to it unchanged."""

    def __init__(self, sky: StarSource, port: int = 0, host: str = "127.0.0.1", max_radius_deg: float = 2.0) -> None:
        super().__init__("gaia", host=host, port=port)
        self.engine = GaiaQueryEngine(sky, max_radius_deg=max_radius_deg)
        self._jobs: dict[str, Job] = {}
        self._jobs_lock = threading.Lock()
        self._ids = itertools.count()
        self.routes(
            [
                ("GET", TAP + r"/sync", self._sync),
                ("POST", TAP + r"/sync", self._sync),
                ("GET", TAP + r"/async", self._job_list),
                ("POST", TAP + r"/async", self._create),
                ("GET", _JOB, self._job_document),
                ("POST", _JOB, self._job_post),
                ("DELETE", _JOB, self._delete),
                ("GET", _JOB + r"/phase", self._phase),
                ("POST", _JOB + r"/phase", self._phase_post),
                ("GET", _JOB + r"/results", self._results_list),
                ("GET", _JOB + r"/results/result", self._result),
                ("GET", _JOB + r"/error", self._job_error),
                ("GET", _JOB + r"/(?P<item>parameters|quote|executionduration|destruction|owner)", self._job_item),
                ("GET", TAP + r"/tables", self._tables),
                ("GET", TAP + r"/capabilities", self._capabilities),
                ("GET", TAP + r"/availability", lambda _: self._xml(gaia_documents.availability_xml())),
                ("GET", TAP + r"/notification", lambda _: Response(200, b"", content_type="text/plain")),
            ]
        )  # fmt: skip

    # -- helpers ---------------------------------------------------------------------

    def _base(self, request: Request) -> str:
        host = request.headers.get("host")
        return f"http://{host}" if host else self.url

    def _job_url(self, request: Request, job: Job) -> str:
        return f"{self._base(request)}{TAP}/async/{job.job_id}"

    def _new_job(self, request: Request) -> Job:
        query, fmt, maxrec = _tap_params(request)
        # The archive's ids are the creation time in ms and a letter; the counter keeps them unique.
        job_id = f"{int(time.time() * 1000) + next(self._ids)}O"
        return Job(job_id, query, fmt, maxrec, request.arg("RUNID"), datetime.now(UTC))

    def _execute(self, job: Job) -> None:
        job.phase, job.started = "EXECUTING", datetime.now(UTC)
        try:
            result = self.engine.run(job.query, job.job_id, job.maxrec)
            job.body, job.headers = render(result, job.fmt)
            job.phase = "COMPLETED"
        except adql.AdqlUnsupported as exc:
            job.error = (
                f"Cannot execute query '{job.query}' for job '{job.job_id}': "
                f"this local replica of the Gaia archive does not support {exc}"
            )
            job.phase = "ERROR"
        except adql.AdqlError as exc:
            job.error = f"Cannot parse query '{job.query}' for job '{job.job_id}': {exc}"
            job.phase = "ERROR"
        job.ended = datetime.now(UTC)

    def _job(self, request: Request) -> Job:
        with self._jobs_lock:
            job = self._jobs.get(request.match["job"])
        if job is None:
            raise KeyError(request.match["job"])
        return job

    # -- sync ------------------------------------------------------------------------

    def _sync(self, request: Request) -> Response:
        try:
            job = self._new_job(request)
        except TapRequestError as exc:
            return _error(str(exc))
        self._execute(job)
        if job.phase == "ERROR":
            return _error(job.error or "error")
        return Response(200, job.body, job.headers, content_type=job.fmt.content_type)

    # -- async -----------------------------------------------------------------------

    def _create(self, request: Request) -> Response:
        if "multipart/form-data" in request.headers.get("content-type", ""):
            return _error("Table uploads are not supported by this replica")
        try:
            job = self._new_job(request)
        except TapRequestError as exc:
            return _error(str(exc))
        with self._jobs_lock:
            self._jobs[job.job_id] = job
            while len(self._jobs) > MAX_JOBS:
                self._jobs.pop(next(iter(self._jobs)))
        if (request.arg("PHASE") or "").upper() == "RUN":
            self._execute(job)
        return _see_other(self._job_url(request, job))

    def _job_list(self, request: Request) -> Response:
        with self._jobs_lock:
            jobs = [(job, self._job_url(request, job)) for job in self._jobs.values()]
        return Response(200, gaia_documents.job_list_xml(jobs).encode(), content_type=_XML)

    def _job_document(self, request: Request) -> Response:
        return self._with_job(request, lambda job: self._xml(gaia_documents.job_xml(job, self._job_url(request, job))))

    def _job_post(self, request: Request) -> Response:
        if (request.arg("ACTION") or "").upper() == "DELETE":
            return self._delete(request)
        if request.arg("PHASE"):
            return self._phase_post(request)
        return self._with_job(request, lambda job: _see_other(self._job_url(request, job)))

    def _delete(self, request: Request) -> Response:
        with self._jobs_lock:
            job = self._jobs.pop(request.match["job"], None)
        if job is None:
            return _error(f"Job '{request.match['job']}' not found", HTTPStatus.NOT_FOUND)
        return _see_other(f"{self._base(request)}{TAP}/async")

    def _phase(self, request: Request) -> Response:
        return self._with_job(request, lambda job: Response(200, job.phase.encode(), content_type="text/plain"))

    def _phase_post(self, request: Request) -> Response:
        def change(job: Job) -> Response:
            phase = (request.arg("PHASE") or "").upper()
            if phase == "RUN":
                if job.phase == "PENDING":
                    self._execute(job)
            elif phase == "ABORT":
                if job.phase in ("PENDING", "QUEUED", "EXECUTING"):
                    job.phase, job.ended = "ABORTED", datetime.now(UTC)
            else:
                return _error(f"Invalid PHASE: {phase}")
            return _see_other(self._job_url(request, job))

        return self._with_job(request, change)

    def _results_list(self, request: Request) -> Response:
        def results(job: Job) -> Response:
            return self._xml(
                gaia_documents.XML_HEAD + gaia_documents.results_xml(job, self._job_url(request, job), True)
            )

        return self._with_job(request, results)

    def _result(self, request: Request) -> Response:
        def result(job: Job) -> Response:
            if job.phase == "COMPLETED":
                return Response(200, job.body, job.headers, content_type=job.fmt.content_type)
            if job.phase == "ERROR":
                return Response(200, error_votable(job.error or "", 200), content_type=_XML)
            return _error(f"Job '{job.job_id}' has no results: it is {job.phase}", HTTPStatus.NOT_FOUND)

        return self._with_job(request, result)

    def _job_error(self, request: Request) -> Response:
        def error(job: Job) -> Response:
            if job.phase != "ERROR":
                return _error(f"Job '{job.job_id}' has no error: it is {job.phase}", HTTPStatus.NOT_FOUND)
            return Response(200, error_votable(job.error or "", 200), content_type=_XML)

        return self._with_job(request, error)

    def _job_item(self, request: Request) -> Response:
        def item(job: Job) -> Response:
            name = request.match["item"]
            if name == "parameters":
                return self._xml(gaia_documents.XML_HEAD + gaia_documents.parameters_xml(job, namespaces=True))
            values = {"executionduration": "0", "destruction": gaia_documents.iso(job.destruction) or ""}
            return Response(200, values.get(name, "").encode(), content_type="text/plain")

        return self._with_job(request, item)

    def _with_job(self, request: Request, answer: Callable[[Job], Response]) -> Response:
        try:
            job = self._job(request)
        except KeyError:
            return _error(f"Job '{request.match['job']}' not found", HTTPStatus.NOT_FOUND)
        return answer(job)

    @staticmethod
    def _xml(text: str) -> Response:
        return Response(200, text.encode(), content_type=_XML)

    # -- VOSI ------------------------------------------------------------------------

    def _tables(self, request: Request) -> Response:
        wanted = (request.arg("tables") or "").strip().lower()
        if wanted and wanted != gaia_source.TABLE:
            return _error(f"Table '{wanted}' not found", HTTPStatus.NOT_FOUND)
        return self._xml(gaia_documents.tables_xml())

    def _capabilities(self, request: Request) -> Response:
        return self._xml(gaia_documents.capabilities_xml(self._base(request) + TAP))
