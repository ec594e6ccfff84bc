"""Long operations as resumable jobs whose state lives in the object store.

A job has an id, a kind, parameters, a state and progress, persisted under the
`jobs` bucket, so it can be queried after the caller has gone and watched from any
replica. A process claims a job with a lease it renews while the job runs; when the
process dies (kill -9 included) the lease lapses, or the dead owner is recognised
at once when it ran on this host, and the next scan — in this process or another —
resumes the job. Handlers keep their place with ``ctx.save_checkpoint(...)`` and
read it back with ``ctx.checkpoint()``, so a resumed job neither loses nor redoes
stored work.

Layout in the `jobs` bucket (keys derived from ids, so rewrites are idempotent):
    {service}/{job_id}/job.json          the record
    {service}/{job_id}/checkpoint.json   the handler's own resume state
    {service}/{job_id}/cancel            present once cancellation was asked for
    {service}/active/{job_id}            present while the job is not finished
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from services.runtime.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, ServiceError
from services.runtime.logs import fields
from services.runtime.metrics import JOBS_FINISHED, JOBS_RESUMED
from services.runtime.objectstore import ObjectStore
from services.runtime.processes import pid_alive

log = logging.getLogger("prettyspace.jobs")

JOBS_BUCKET = "jobs"
ACTIVE = ("PENDING", "RUNNING")
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")
STATES = ACTIVE + TERMINAL
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,95}$")
_KIND_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
_PERSIST_EVERY_S = 0.5


UNSETTLED = "_unsettled"  # marks a live record whose final state is not stored yet


class JobInterrupted(Exception):
    """The process is stopping: leave the job resumable (raised by ctx.check())."""


class JobCancelled(Exception):
    """Someone asked for the job to be cancelled (raised by ctx.check())."""


JobHandler = Callable[["JobContext"], Mapping[str, Any] | None]


def validate_job_id(job_id: str) -> str:
    if not _ID_RE.match(job_id or ""):
        raise InvalidArgument("id", f"{job_id!r} is not a job id (lower-case letters, digits and '-')")
    return job_id


class JobContext:
    """What a job handler sees: its parameters, progress, checkpoints, stop requests."""

    def __init__(self, manager: JobManager, record: dict[str, Any]) -> None:
        self._manager = manager
        self._record = record
        self._last_persist = 0.0
        self.cancel_requested = threading.Event()
        self.log = logging.LoggerAdapter(log, {"fields": {"job_id": record["id"], "kind": record["kind"]}})

    @property
    def job_id(self) -> str:
        return self._record["id"]

    @property
    def params(self) -> dict[str, str]:
        return dict(self._record["params"])

    @property
    def store(self) -> ObjectStore:
        return self._manager.store

    @property
    def config(self) -> Any:
        """The service's Config (services.runtime.config), when run by a service."""
        return self._manager.config

    @property
    def attempt(self) -> int:
        return int(self._record["attempts"])

    def progress(
        self,
        *,
        done: int | None = None,
        total: int | None = None,
        stage: str | None = None,
        message: str | None = None,
    ) -> None:
        with self._manager._cond:
            p = self._record["progress"]
            if done is not None:
                p["done"] = int(done)
            if total is not None:
                p["total"] = int(total)
            if stage is not None:
                p["stage"] = stage
            if message is not None:
                p["message"] = message
        self._changed()

    def count(self, name: str, n: int = 1) -> None:
        with self._manager._cond:
            counters = self._record["progress"]["counters"]
            counters[name] = int(counters.get(name, 0)) + int(n)
        self._changed()

    def set_counters(self, counters: Mapping[str, int]) -> None:
        """Replace every counter: a resumed job restores those saved with its checkpoint,
        so work redone after a crash is not counted twice."""
        with self._manager._cond:
            self._record["progress"]["counters"] = {k: int(v) for k, v in counters.items()}
        self._changed()

    def set_metrics(self, metrics: Mapping[str, float]) -> None:
        """Replace the job's current measurements (losses, rates, scores): what a watcher shows."""
        with self._manager._cond:
            self._record["progress"]["metrics"] = {k: float(v) for k, v in metrics.items()}
        self._changed()

    def counters(self) -> dict[str, int]:
        with self._manager._cond:
            return dict(self._record["progress"]["counters"])

    def checkpoint(self) -> dict[str, Any] | None:
        """The state saved by the last save_checkpoint of this job, in any process."""
        key = self._manager._key(self.job_id, "checkpoint.json")
        if not self.store.exists(JOBS_BUCKET, key):
            return None
        return self.store.get_json(JOBS_BUCKET, key)

    def save_checkpoint(self, state: Mapping[str, Any]) -> None:
        self.store.put_json(JOBS_BUCKET, self._manager._key(self.job_id, "checkpoint.json"), dict(state))
        self._changed(force=True)

    def check(self) -> None:
        """Call between units of work: raises when the job must stop now."""
        if self.cancel_requested.is_set():
            raise JobCancelled()
        if self._manager._stopping.is_set():
            raise JobInterrupted()

    def _changed(self, force: bool = False) -> None:
        self._manager._touch(self._record)
        now = time.monotonic()
        if force or now - self._last_persist >= _PERSIST_EVERY_S:
            self._last_persist = now
            self._manager._persist(self._record)


class JobManager:
    """Runs this service's jobs, resumes orphaned ones, and answers queries about all."""

    def __init__(
        self,
        service: str,
        store: ObjectStore,
        handlers: Mapping[str, JobHandler],
        *,
        workers: int = 2,
        lease_s: float = 30.0,
        scan_s: float = 10.0,
        poll_s: float = 0.5,
        max_attempts: int = 5,
        config: Any = None,
    ) -> None:
        for kind in handlers:
            if not _KIND_RE.match(kind):
                raise ValueError(f"job kind {kind!r} must match {_KIND_RE.pattern}")
        self.service = service
        self.store = store
        self.config = config
        self.handlers = dict(handlers)
        self.lease_s = lease_s
        self.scan_s = scan_s
        self.poll_s = poll_s
        self.max_attempts = max_attempts
        self.owner = f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(3)}"
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._claimed: dict[str, dict[str, Any]] = {}  # records of jobs this process owns
        self._contexts: dict[str, JobContext] = {}
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"{service}-job")
        self._threads: list[threading.Thread] = []

    # -- keys and persistence ---------------------------------------------------

    def _key(self, job_id: str, name: str) -> str:
        return f"{self.service}/{job_id}/{name}"

    def _persist(self, record: dict[str, Any]) -> None:
        with self._cond:
            snapshot = json.loads(json.dumps({k: v for k, v in record.items() if k != UNSETTLED}))
        self.store.put_json(JOBS_BUCKET, self._key(record["id"], "job.json"), snapshot)

    def _touch(self, record: dict[str, Any], notify: bool = True) -> None:
        with self._cond:
            record["rev"] = int(record.get("rev", 0)) + 1
            record["updated"] = time.time()
            if notify:
                self._cond.notify_all()

    def _read(self, job_id: str) -> dict[str, Any] | None:
        key = self._key(job_id, "job.json")
        if not self.store.exists(JOBS_BUCKET, key):
            return None
        return self.store.get_json(JOBS_BUCKET, key)

    # -- queries ------------------------------------------------------------------

    def get(self, job_id: str) -> dict[str, Any]:
        validate_job_id(job_id)
        with self._cond:
            live = self._claimed.get(job_id)
            deadline = time.monotonic() + 30.0
            while live is not None and live.get(UNSETTLED) and time.monotonic() < deadline:
                self._cond.wait(timeout=0.5)  # its final state is being stored
                live = self._claimed.get(job_id)
            if live is not None:
                return json.loads(json.dumps({k: v for k, v in live.items() if k != UNSETTLED}))
        record = self._read(job_id)
        if record is None:
            raise NotFound(f"no job {job_id!r} in service {self.service}")
        return record

    def list(self, kind: str = "", state: str = "", limit: int = 100) -> list[dict[str, Any]]:
        if state and state not in STATES:
            raise InvalidArgument("state", f"unknown job state {state!r}")
        records = []
        for key in self.store.list_keys(JOBS_BUCKET, f"{self.service}/"):
            if not key.endswith("/job.json"):
                continue
            record = self.get(key.split("/")[1])
            if (not kind or record["kind"] == kind) and (not state or record["state"] == state):
                records.append(record)
        records.sort(key=lambda r: r["created"], reverse=True)
        return records[: limit or 100]

    def watch(
        self, job_id: str, heartbeat_s: float = 0.0, active: Callable[[], bool] = lambda: True
    ) -> Iterator[dict[str, Any]]:
        """Yield the job whenever it changes; ends after a terminal state, or when
        this process shuts down (a client then re-watches on another replica)."""
        last_rev: tuple[Any, Any] | None = None
        last_sent = 0.0
        while True:
            record = self.get(job_id)
            rev = (record.get("rev"), record["state"])
            now = time.monotonic()
            if rev != last_rev or (heartbeat_s and now - last_sent >= heartbeat_s):
                last_rev, last_sent = rev, now
                yield record
            if record["state"] in TERMINAL or self._stopping.is_set() or not active():
                return
            with self._cond:
                self._cond.wait(timeout=self.poll_s)

    def refuse_overlap(self, kind: str, overlaps: Callable[[dict[str, Any]], str], request_id: str = "") -> None:
        """FAILED_PRECONDITION naming the job when a pending or running job of `kind` would do the
        same work: overlaps(job) says what they share ("a crawl of esahubble"), "" for nothing. The
        same request again (its request_id) is let through: submit() returns that job."""
        for state in ("PENDING", "RUNNING"):
            for job in self.list(kind=kind, state=state):
                if request_id and job.get("request_id") == request_id:
                    continue
                shared = overlaps(job)
                if shared:
                    raise FailedPrecondition(
                        f"{shared} is already {state.lower()} (job {job['id']}); "
                        f"watch it with: prettyspace jobs watch {job['id']} --service {self.service}"
                    )

    # -- submission and cancellation ---------------------------------------------

    def submit(self, kind: str, params: Mapping[str, Any] | None = None, request_id: str = "") -> dict[str, Any]:
        """Create a job (or return the one already made for this request_id) and run it."""
        if kind not in self.handlers:
            raise InvalidArgument("kind", f"service {self.service} runs no {kind!r} jobs")
        params = {k: str(v) for k, v in (params or {}).items()}
        if request_id:
            digest = hashlib.sha256(f"{self.service}|{kind}|{request_id}".encode()).hexdigest()[:20]
            job_id = f"{kind}-{digest}"
            existing = self._read(job_id)
            if existing is not None:
                if existing["params"] != params:
                    raise AlreadyExists(
                        f"request_id {request_id!r} was already used for job {job_id} with other parameters"
                    )
                return existing
        else:
            job_id = f"{kind}-{time.strftime('%Y%m%d%H%M%S', time.gmtime())}-{secrets.token_hex(4)}"
        now = time.time()
        record: dict[str, Any] = {
            "id": job_id,
            "kind": kind,
            "service": self.service,
            "state": "PENDING",
            "params": params,
            "request_id": request_id,
            "progress": {"done": 0, "total": 0, "stage": "", "counters": {}, "message": ""},
            "created": now,
            "updated": now,
            "finished": None,
            "error": "",
            "result": {},
            "attempts": 0,
            "owner": self.owner,
            "lease_until": now + self.lease_s,
            "rev": 0,
        }
        self.store.put_bytes(JOBS_BUCKET, f"{self.service}/active/{job_id}", b"")
        self._persist(record)
        with self._cond:
            self._claimed[job_id] = record
        self._executor.submit(self._run, job_id)
        log.info("job submitted", extra=fields(job_id=job_id, kind=kind, params=params))
        return json.loads(json.dumps(record))

    def cancel(self, job_id: str) -> dict[str, Any]:
        record = self.get(job_id)
        if record["state"] in TERMINAL:
            return record
        self.store.put_bytes(JOBS_BUCKET, self._key(job_id, "cancel"), b"")
        with self._cond:
            ctx = self._contexts.get(job_id)
            queued = job_id in self._claimed and ctx is None
        if ctx is not None:
            ctx.cancel_requested.set()
        elif queued or (record["state"] == "PENDING" and not self._owner_alive(record)):
            # Not started anywhere: finish it as cancelled right here.
            self._finish(record, "CANCELLED", error="cancelled before it started")
        return self.get(job_id)

    # -- running ---------------------------------------------------------------------

    def _run(self, job_id: str) -> None:
        with self._cond:
            record = self._claimed.get(job_id)
        if record is None or self._stopping.is_set():
            return
        if self.store.exists(JOBS_BUCKET, self._key(job_id, "cancel")):
            self._finish(record, "CANCELLED", error="cancelled before it started")
            return
        with self._cond:
            record["attempts"] = int(record["attempts"]) + 1
            record["state"] = "RUNNING"
            ctx = JobContext(self, record)
            self._contexts[job_id] = ctx
        if record["attempts"] > 1:
            JOBS_RESUMED.labels(record["kind"]).inc()
        self._touch(record)
        self._persist(record)
        log.info("job running", extra=fields(job_id=job_id, kind=record["kind"], attempt=record["attempts"]))
        try:
            result = self.handlers[record["kind"]](ctx) or {}
        except JobInterrupted:
            self._release(record)
            return
        except JobCancelled:
            self._finish(record, "CANCELLED", error="cancelled on request")
            return
        except ServiceError as exc:
            self._finish(record, "FAILED", error=str(exc))
            return
        except Exception as exc:
            log.exception("job failed", extra=fields(job_id=job_id, kind=record["kind"]))
            self._finish(record, "FAILED", error=f"{type(exc).__name__}: {exc}")
            return
        with self._cond:
            record["result"] = {k: str(v) for k, v in result.items()}
        self._finish(record, "SUCCEEDED")

    def _settle(self, record: dict[str, Any], **changes: Any) -> None:
        """A final change (finished, released), stored before any reader of this process sees it:
        a watcher told the job ended may at once ask any replica, which reads the store. Until
        it is stored, get() waits (one object-store write) rather than show it early."""
        with self._cond:
            record.update(changes)
            record[UNSETTLED] = True
        try:
            self._touch(record, notify=False)
            self._persist(record)
        finally:
            with self._cond:
                record.pop(UNSETTLED, None)
                self._cond.notify_all()

    def _finish(self, record: dict[str, Any], state: str, error: str = "") -> None:
        self._settle(record, state=state, error=error, finished=time.time(), owner="", lease_until=0)
        with contextlib.suppress(ServiceError):
            self.store.delete(JOBS_BUCKET, f"{self.service}/active/{record['id']}")
        self._forget(record["id"])
        JOBS_FINISHED.labels(record["kind"], state).inc()
        log.info("job finished", extra=fields(job_id=record["id"], state=state, error=error))

    def _release(self, record: dict[str, Any]) -> None:
        """Hand a job back (process stopping): PENDING, no owner, resumable at once."""
        self._settle(record, state="PENDING", owner="", lease_until=0)
        self._forget(record["id"])
        log.info("job released for resumption", extra=fields(job_id=record["id"]))

    def _forget(self, job_id: str) -> None:
        with self._cond:
            self._claimed.pop(job_id, None)
            self._contexts.pop(job_id, None)
            self._cond.notify_all()

    # -- leases and resumption ---------------------------------------------------------

    def _owner_alive(self, record: dict[str, Any]) -> bool:
        owner = record.get("owner") or ""
        if not owner:
            return False
        if owner == self.owner:
            return True
        host, _, rest = owner.partition("/")
        pid = rest.partition("/")[0]
        if host == socket.gethostname() and pid.isdigit() and not pid_alive(int(pid)):
            return False  # died on this host: no need to wait for its lease
        return float(record.get("lease_until") or 0) > time.time()

    def _claim(self, job_id: str) -> bool:
        record = self._read(job_id)
        if record is None or record["state"] not in ACTIVE or record["kind"] not in self.handlers:
            return False
        if self._owner_alive(record):
            return False
        if int(record["attempts"]) >= self.max_attempts:
            self._finish(record, "FAILED", error=f"gave up after {record['attempts']} attempts")
            return False
        record["owner"] = self.owner
        record["lease_until"] = time.time() + self.lease_s
        self._persist(record)
        # Another replica may have claimed it in the same instant: last writer wins,
        # and the loser notices on reading back.
        time.sleep(random.uniform(0.05, 0.2))
        again = self._read(job_id)
        if again is None or again.get("owner") != self.owner:
            return False
        with self._cond:
            self._claimed[job_id] = again
        log.info("resuming job", extra=fields(job_id=job_id, kind=again["kind"], attempt=again["attempts"] + 1))
        self._executor.submit(self._run, job_id)
        return True

    def scan(self) -> int:
        """Claim every orphaned job of a kind this process runs; returns how many."""
        claimed = 0
        for key in self.store.list_keys(JOBS_BUCKET, f"{self.service}/active/"):
            job_id = key.rsplit("/", 1)[-1]
            with self._cond:
                if job_id in self._claimed:
                    continue
            if self._stopping.is_set():
                break
            try:
                claimed += self._claim(job_id)
            except ServiceError:
                log.warning("could not claim job", exc_info=True, extra=fields(job_id=job_id))
        return claimed

    def _renew_leases(self) -> None:
        with self._cond:
            records = list(self._claimed.values())
        for record in records:
            with self._cond:
                record["lease_until"] = time.time() + self.lease_s
            self._persist(record)
            if self.store.exists(JOBS_BUCKET, self._key(record["id"], "cancel")):
                with self._cond:
                    ctx = self._contexts.get(record["id"])
                if ctx is not None:
                    ctx.cancel_requested.set()

    def _loop(self, every_s: float, action: Callable[[], Any], name: str) -> None:
        while not self._stopping.wait(every_s):
            try:
                action()
            except Exception:
                log.warning("%s failed; will retry", name, exc_info=True)

    def start(self) -> None:
        """Resume orphaned jobs now, then keep scanning and renewing leases."""
        self.scan()
        for every, action, name in (
            (self.scan_s, self.scan, "job scan"),
            (max(self.lease_s / 3, 0.2), self._renew_leases, "lease renewal"),
        ):
            thread = threading.Thread(target=self._loop, args=(every, action, name), daemon=True, name=name)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask running jobs to stop at their next check(), and hand back what is left."""
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        self._executor.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._contexts and time.monotonic() < deadline:
                self._cond.wait(timeout=0.1)
            leftover = [r for jid, r in self._claimed.items() if jid not in self._contexts]
        for record in leftover:
            self._release(record)
