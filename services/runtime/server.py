"""gRPC server bootstrap shared by every service.

``run_service(spec)`` is each service's main: it validates the configuration,
checks the object store, binds the gRPC and metrics ports, serves the service with
standard health checking and reflection, resumes orphaned jobs, and on SIGTERM
drains: health goes NOT_SERVING, new calls are refused, in-flight calls get
PSS_SHUTDOWN_GRACE_S to finish, running jobs checkpoint and are handed back.

Any start-up problem ends the process at once with one line on stderr saying what
and where (exit 2 for configuration, 1 otherwise), never a traceback.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.api import common_pb2, common_pb2_grpc
from services.runtime.config import Config, ConfigError, Setting, load_config
from services.runtime.errors import ServiceError
from services.runtime.interceptors import ServiceInterceptor
from services.runtime.jobs import JobHandler, JobManager
from services.runtime.jobs_api import JobsServicer
from services.runtime.logs import fields, setup_logging
from services.runtime.metrics import start_metrics_server
from services.runtime.objectstore import BUCKETS, ObjectStore

log = logging.getLogger("prettyspace.server")

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
JOBS_SERVICE = common_pb2.DESCRIPTOR.services_by_name["Jobs"].full_name


class StartupError(Exception):
    """The service cannot start; the message says what and where."""


@dataclass
class ServiceContext:
    """What a service's registration function gets to build its servicers."""

    name: str
    config: Config
    store: ObjectStore
    jobs: JobManager


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    # Adds the service's servicers to the server; returns their full service names.
    register: Callable[[grpc.Server, ServiceContext], Iterable[str]]
    settings: tuple[Setting, ...] = ()
    job_handlers: Mapping[str, JobHandler] = field(default_factory=dict)


class RunningService:
    """A started service; ``shutdown()`` drains it."""

    def __init__(self, spec: ServiceSpec, config: Config, store: ObjectStore | None = None) -> None:
        self.spec = spec
        self.config = config
        self.store = store or ObjectStore.from_config(config)
        self.jobs = JobManager(
            spec.name,
            self.store,
            spec.job_handlers,
            workers=config["JOB_WORKERS"],
            lease_s=config["JOB_LEASE_S"],
            scan_s=config["JOB_SCAN_S"],
            config=config,
        )
        self.health = health.HealthServicer(
            experimental_non_blocking=True,
            experimental_thread_pool=ThreadPoolExecutor(max_workers=2, thread_name_prefix="health"),
        )
        self.server = grpc.server(
            ThreadPoolExecutor(max_workers=config["GRPC_WORKERS"], thread_name_prefix=f"{spec.name}-rpc"),
            interceptors=[ServiceInterceptor()],
            options=[
                # Without this, a second process could bind the same port silently.
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ],
        )
        self.service_names: list[str] = []
        self.port = 0

    def start(self) -> None:
        cfg = self.config
        try:
            self.store.check()
            self.store.ensure_buckets(BUCKETS)
        except ServiceError as exc:
            raise StartupError(str(exc)) from None

        common_pb2_grpc.add_JobsServicer_to_server(JobsServicer(self.jobs), self.server)
        context = ServiceContext(self.spec.name, cfg, self.store, self.jobs)
        self.service_names = [JOBS_SERVICE, *self.spec.register(self.server, context)]
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [*self.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server
        )

        address = f"{cfg['GRPC_HOST']}:{cfg['GRPC_PORT']}"
        try:
            self.port = self.server.add_insecure_port(address)
        except RuntimeError:
            self.port = 0
        if not self.port:
            raise StartupError(f"cannot listen for gRPC on {address} (PSS_GRPC_PORT): port in use or not bindable")
        try:
            start_metrics_server(cfg["GRPC_HOST"], cfg["METRICS_PORT"])
        except OSError as exc:
            raise StartupError(
                f"cannot serve metrics on {cfg['GRPC_HOST']}:{cfg['METRICS_PORT']} (PSS_METRICS_PORT): "
                f"{exc.strerror or exc}"
            ) from None

        self.server.start()
        for name in ("", *self.service_names):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self.jobs.start()
        log.info(
            "serving",
            extra=fields(
                address=f"{cfg['GRPC_HOST']}:{self.port}",
                metrics_port=cfg["METRICS_PORT"],
                services=self.service_names,
                config=cfg.describe(),
            ),
        )

    def shutdown(self) -> None:
        grace = self.config["SHUTDOWN_GRACE_S"]
        log.info("draining", extra=fields(grace_s=grace))
        self.health.enter_graceful_shutdown()
        # Refuse new calls at once; in-flight ones get the grace period. Watch
        # streams end as soon as the job manager is stopping.
        self.jobs._stopping.set()
        stopped = self.server.stop(grace)
        self.jobs.stop(timeout_s=grace)
        stopped.wait()
        log.info("stopped")


def _fail(service: str, message: str, code: int) -> int:
    print(f"prettyspace-{service}: {message}", file=sys.stderr, flush=True)
    return code


def run_service(spec: ServiceSpec, environ: Mapping[str, str] | None = None) -> int:
    """A service's main. Returns the exit status."""
    try:
        config = load_config(spec.settings, environ)
    except ConfigError as exc:
        return _fail(spec.name, f"configuration error: {exc}", 2)
    setup_logging(spec.name, config["LOG_LEVEL"], config["LOG_FORMAT"])

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())

    service = RunningService(spec, config)
    try:
        service.start()
    except StartupError as exc:
        return _fail(spec.name, f"cannot start: {exc}", 1)
    while not stop.wait(0.1):  # short waits: signal handlers run between them
        pass
    service.shutdown()
    return 0
