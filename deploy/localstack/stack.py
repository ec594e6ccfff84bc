"""The local stack: a real S3 server (SeaweedFS), a real Triton server and every
service, on 127.0.0.1, started from nothing and checked healthy.

`make up` runs it with the fixed ports of services.client.addresses and leaves it
running (state in .stack/); tests run the same code on free ports in a temporary
folder, so parallel runs never collide.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from deploy.localstack import procs, seaweed, triton
from deploy.localstack.ports import free_block, free_port
from deploy.triton import placeholder
from services.client.addresses import REPLICA_URL_SETTINGS, REPLICAS, SERVICES, env_name, local_ports
from services.client.health import ComponentHealth, platform_health
from services.runtime.errors import ServiceError
from services.runtime.objectstore import BUCKETS, ObjectStore

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ROOT = REPO_ROOT / ".stack"
DEFAULT_CACHE = REPO_ROOT / ".cache"
MODELS_BUCKET = "models"
PLACEHOLDER_MODEL = "bicubic_x4"


class StackError(RuntimeError):
    """A component did not come up; the message names it and ends with its log."""


# Settings of the local stack's own services that differ from production defaults.
LOCAL_SERVICE_SETTINGS: dict[str, dict[str, str]] = {
    # The replicas are ours and on loopback: no politeness delay; screen-size images only,
    # because the replica renders each file on first request (large ones take seconds).
    "crawler": {"PSS_CRAWL_RATE_PER_HOST": "0", "PSS_CRAWL_SIZES": "screen"},
    # The hips2fits replica is ours too: no upstream rate limit.
    "cutouts": {"PSS_UPSTREAM_RATE_PER_S": "0"},
}


@dataclass
class Layout:
    """Every port of one stack."""

    seaweed_base: int
    triton_http: int
    triton_grpc: int
    triton_metrics: int
    services: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (grpc, metrics)
    replicas: dict[str, int] = field(default_factory=dict)  # esahubble, esawebb, hips2fits, gaia, sesame -> port

    @property
    def s3_endpoint(self) -> str:
        return f"127.0.0.1:{seaweed.SeaweedPorts(self.seaweed_base).s3}"

    @classmethod
    def fixed(cls) -> Layout:
        """The `make up` ports, laid out from PSS_LOCAL_PORT_BASE (services.client.addresses)."""
        ports = local_ports()
        triton_ports = ports["triton"]
        return cls(
            ports["seaweed_base"],  # type: ignore[arg-type]
            triton_ports["http"],  # type: ignore[index]
            triton_ports["grpc"],  # type: ignore[index]
            triton_ports["metrics"],  # type: ignore[index]
            dict(ports["services"]),  # type: ignore[call-overload]
            dict(ports["replicas"]),  # type: ignore[call-overload]
        )

    @classmethod
    def free(cls, services: Iterable[str] = SERVICES) -> Layout:
        return cls(
            free_block(seaweed.PORT_BLOCK, seaweed.EXTRA_OFFSETS),
            free_port(),
            free_port(),
            free_port(),
            {name: (free_port(), free_port()) for name in services},
            {name: free_port() for name in REPLICAS},
        )


@dataclass
class Stack:
    root: Path
    layout: Layout
    access_key: str
    secret_key: str
    cache_dir: Path = DEFAULT_CACHE
    services: tuple[str, ...] = SERVICES
    with_triton: bool = True
    with_replicas: bool = True
    extra_env: dict[str, str] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)

    # -- construction ---------------------------------------------------------

    @classmethod
    def local(cls, root: Path = DEFAULT_ROOT) -> Stack:
        """The `make up` stack: fixed ports, credentials kept in root (made once)."""
        creds_file = root / "credentials.json"
        if creds_file.exists():
            creds = json.loads(creds_file.read_text())
        else:
            root.mkdir(parents=True, exist_ok=True)
            creds = {"access_key": "pss-" + secrets.token_hex(6), "secret_key": secrets.token_urlsafe(24)}
            creds_file.write_text(json.dumps(creds))
            creds_file.chmod(0o600)
        return cls(root, Layout.fixed(), creds["access_key"], creds["secret_key"])

    @classmethod
    def ephemeral(cls, root: Path | None = None, **kwargs: object) -> Stack:
        """A stack on free ports in a fresh folder (tests, benchmarks)."""
        root = root or Path(tempfile.mkdtemp(prefix="pss-stack-"))
        services = tuple(kwargs.pop("services", SERVICES))  # type: ignore[arg-type]
        return cls(
            root,
            Layout.free(services),
            "pss-" + secrets.token_hex(6),
            secrets.token_urlsafe(24),
            services=services,
            **kwargs,  # type: ignore[arg-type]
        )

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    def store(self) -> ObjectStore:
        return ObjectStore(self.layout.s3_endpoint, self.access_key, self.secret_key, timeout_s=5.0)

    def env(self) -> dict[str, str]:
        """PSS_* settings that reach this stack (for services, the CLI and tests)."""
        env = {
            "PSS_S3_ENDPOINT": self.layout.s3_endpoint,
            "PSS_S3_ACCESS_KEY": self.access_key,
            "PSS_S3_SECRET_KEY": self.secret_key,
            "PSS_TRITON_GRPC_ADDR": f"127.0.0.1:{self.layout.triton_grpc}",
        }
        for name, (grpc_port, _) in self.layout.services.items():
            env[env_name(name)] = f"127.0.0.1:{grpc_port}"
        if self.with_replicas:
            env.update({REPLICA_URL_SETTINGS[name]: url for name, url in self.replica_urls().items()})
        env.update(self.extra_env)
        return env

    def replica_urls(self) -> dict[str, str]:
        """Base URL of each replica of a real site (where the production setting would
        name esahubble.org, alasky.cds.unistra.fr/hips-image-services/hips2fits,
        cds.unistra.fr/cgi-bin/nph-sesame, …)."""
        urls = {name: f"http://127.0.0.1:{port}" for name, port in self.layout.replicas.items()}
        if "hips2fits" in urls:
            urls["hips2fits"] += "/hips-image-services/hips2fits"
        if "gaia" in urls:
            urls["gaia"] += "/tap-server/tap"
        if "sesame" in urls:
            urls["sesame"] += "/cgi-bin/nph-sesame"
        return urls

    def service_env(self, name: str) -> dict[str, str]:
        grpc_port, metrics_port = self.layout.services[name]
        local = {k: v for k, v in LOCAL_SERVICE_SETTINGS.get(name, {}).items() if k not in self.extra_env}
        return self.process_env(grpc_port, metrics_port, **local)

    def process_env(self, grpc_port: int, metrics_port: int, **overrides: str) -> dict[str, str]:
        """The environment of a service process of this stack: this environment less
        any PSS_* of its own, the stack's settings, its ports, then overrides."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PSS_")}
        env.update(self.env())
        env.update(
            {
                "PSS_GRPC_HOST": "127.0.0.1",
                "PSS_GRPC_PORT": str(grpc_port),
                "PSS_METRICS_PORT": str(metrics_port),
                "PSS_LOG_FORMAT": "json",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(overrides)
        return env

    # -- start ------------------------------------------------------------------

    def start(self, timeout_s: float = 180.0, progress: bool = False) -> None:
        """Start everything and wait until all is healthy; on failure stop what started."""
        say = (lambda msg: print(msg, flush=True)) if progress else (lambda msg: None)
        started = time.monotonic()
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            say(f"object store (SeaweedFS) on {self.layout.s3_endpoint}")
            self._start_seaweed(timeout_s)
            self._publish_placeholder_model()
            if self.with_triton:
                say(f"triton on 127.0.0.1:{self.layout.triton_grpc} (model repository s3://…/{MODELS_BUCKET})")
                triton_proc_args = self._triton_args()
            for name in self.services:
                self.pids[name] = procs.spawn(
                    name, [sys.executable, "-m", "services", name], self.service_env(name), self.log_dir, REPO_ROOT
                ).pid
            if self.with_triton:
                self.pids["triton"] = procs.spawn("triton", *triton_proc_args, self.log_dir).pid
            if self.with_replicas:
                say(f"replicas of the real sites: {', '.join(f'{n} :{p}' for n, p in self.layout.replicas.items())}")
                self.pids["replicas"] = procs.spawn(
                    "replicas", self._replica_argv(), os.environ, self.log_dir, REPO_ROOT
                ).pid
            self._save_state()
            say(f"services: {', '.join(self.services)}")
            self.wait_healthy(max(timeout_s - (time.monotonic() - started), 10.0))
        except BaseException:
            self.stop()
            raise
        say(f"all healthy in {time.monotonic() - started:.1f} s; logs in {self.log_dir}")

    def _start_seaweed(self, timeout_s: float) -> None:
        data = self.root / "s3"
        data.mkdir(parents=True, exist_ok=True)
        identities = seaweed.write_identities(self.root / "s3-identities.json", self.access_key, self.secret_key)
        argv = seaweed.weed_command(data, seaweed.SeaweedPorts(self.layout.seaweed_base), identities)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self.pids["s3"] = procs.spawn("s3", argv, env, self.log_dir).pid
        store = self.store()
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                store.check()
                store.ensure_buckets(BUCKETS)
                return
            except ServiceError as exc:
                if not procs.pid_alive(self.pids["s3"]) or time.monotonic() > deadline:
                    raise StackError(self._failure("s3", f"object store did not come up: {exc}")) from None
                time.sleep(0.2)

    def _publish_placeholder_model(self) -> None:
        """A real baseline model (bicubic x4) so Triton serves something from the start."""
        store = self.store()
        if store.exists(MODELS_BUCKET, f"{PLACEHOLDER_MODEL}/config.pbtxt"):
            return
        with tempfile.TemporaryDirectory() as tmp:
            files = placeholder.write_model_repository(Path(tmp), version=1)
            # Version files first, config last: a reader never sees a config
            # pointing at a version whose files are not all there.
            for rel in sorted(files, key=lambda p: p.name == "config.pbtxt"):
                store.put_file(MODELS_BUCKET, rel.as_posix(), Path(tmp) / rel)

    def _triton_args(self) -> tuple[list[str], dict[str, str]]:
        install = triton.install_triton(self.cache_dir / "triton")
        repository = f"s3://{self.layout.s3_endpoint}/{MODELS_BUCKET}"
        argv = triton.triton_command(
            install,
            repository,
            self.layout.triton_http,
            self.layout.triton_grpc,
            self.layout.triton_metrics,
            load_models=[PLACEHOLDER_MODEL],
        )
        env = triton.triton_env(install, os.environ, self.access_key, self.secret_key)
        return argv, env

    def _replica_argv(self) -> list[str]:
        ports = ",".join(str(self.layout.replicas[name]) for name in REPLICAS)
        cache = self.cache_dir / "universe"
        return [sys.executable, "-m", "services.universe.replicas", "--ports", ports, "--cache", str(cache)]

    def wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            for name, pid in self.pids.items():
                if not procs.pid_alive(pid):
                    raise StackError(self._failure(name, f"{name} exited during start-up"))
            health = self.health(timeout_s=1.0)
            if all(h.ok for h in health):
                return
            if time.monotonic() > deadline:
                bad = [h for h in health if not h.ok]
                raise StackError(
                    self._failure(
                        bad[0].name,
                        f"not healthy after {timeout_s:.0f} s: " + ", ".join(f"{h.name} {h.status}" for h in bad),
                    )
                )
            time.sleep(0.25)

    def health(self, timeout_s: float = 2.0) -> list[ComponentHealth]:
        env = self.env()
        components = platform_health(env, timeout_s)
        wanted = {*self.services, "object-store", *(("triton",) if self.with_triton else ())}
        components = [c for c in components if c.name in wanted]
        if self.with_replicas:
            components += [
                replica_health(name, f"http://127.0.0.1:{port}", timeout_s)
                for name, port in self.layout.replicas.items()
            ]
        return components

    def _failure(self, component: str, message: str) -> str:
        log = self.log_dir / f"{component}.log"
        return f"{message}\n--- last lines of {log}:\n{procs.tail(log)}"

    # -- state and stop ---------------------------------------------------------

    def _save_state(self) -> None:
        state = {
            "layout": asdict(self.layout),
            "pids": self.pids,
            "services": list(self.services),
            "with_triton": self.with_triton,
            "with_replicas": self.with_replicas,
            "access_key": self.access_key,
            "secret_key": self.secret_key,
        }
        self.state_file.write_text(json.dumps(state, indent=1))
        self.state_file.chmod(0o600)
        env_lines = [f"{k}={v}" for k, v in sorted(self.env().items())]
        (self.root / "stack.env").write_text("\n".join(env_lines) + "\n")
        (self.root / "stack.env").chmod(0o600)

    @classmethod
    def load(cls, root: Path = DEFAULT_ROOT) -> Stack | None:
        """The stack recorded in root/state.json, or None."""
        try:
            state = json.loads((root / "state.json").read_text())
        except FileNotFoundError:
            return None
        layout = state["layout"]
        layout["services"] = {k: tuple(v) for k, v in layout["services"].items()}
        return cls(
            root,
            Layout(**layout),
            state["access_key"],
            state["secret_key"],
            services=tuple(state["services"]),
            with_triton=state["with_triton"],
            with_replicas=state.get("with_replicas", False),
            pids={k: int(v) for k, v in state["pids"].items()},
        )

    def running(self) -> dict[str, bool]:
        return {name: procs.pid_alive(pid) for name, pid in self.pids.items()}

    def stop(self, timeout_s: float = 20.0) -> dict[str, bool]:
        """Services first (they drain, all at once), then Triton and the object store.
        Returns, for each component, whether it had to be killed."""
        services = [n for n in self.pids if n not in ("replicas", "triton", "s3")]
        killed: dict[str, bool] = {}
        for group in (services, [n for n in ("replicas", "triton", "s3") if n in self.pids]):
            with ThreadPoolExecutor(max_workers=max(len(group), 1)) as pool:
                results = pool.map(lambda n: procs.stop_pid(self.pids[n], timeout_s), group)
                killed.update(zip(group, results, strict=True))
        self.pids.clear()
        if self.state_file.exists():
            self.state_file.unlink()
        return killed


def replica_health(name: str, url: str, timeout_s: float) -> ComponentHealth:
    try:
        with urllib.request.urlopen(f"{url}/_replica/health", timeout=timeout_s) as response:
            ok = response.status == 200
    except OSError as exc:
        return ComponentHealth(f"replica:{name}", url, "UNREACHABLE", str(exc)[:80])
    return ComponentHealth(f"replica:{name}", url, "SERVING" if ok else "NOT_SERVING")
