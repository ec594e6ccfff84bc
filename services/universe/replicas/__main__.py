"""Start every replica of the real sites in one process, on 127.0.0.1:

    python -m services.universe.replicas [--ports A,B,C,D,E | --port-base N] [--cache DIR] [--seed S]

esahubble.org and esawebb.org (the archives), CDS hips2fits and the Gaia TAP, all
serving the same local sky, and CDS Sesame (the name resolver). Prints one line per
replica with its URL and runs until SIGTERM/SIGINT. Each replica answers
/_replica/health and logs its requests (/_replica/requests); the archives also take
/_replica/generation to change the set of observations between crawls.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from services.universe.replicas.archive import ArchiveReplica
from services.universe.replicas.gaia_tap import GaiaTapReplica
from services.universe.replicas.hips2fits import Hips2FitsReplica
from services.universe.replicas.sesame import SesameReplica
from services.universe.sky import DEFAULT_SEED, Sky

REPLICAS = ("esahubble", "esawebb", "hips2fits", "gaia", "sesame")
DEFAULT_CACHE = Path(__file__).resolve().parents[3] / ".cache" / "universe"


def parse_ports(args: argparse.Namespace) -> list[int]:
    if args.ports:
        ports = [int(p) for p in args.ports.split(",")]
        if len(ports) != len(REPLICAS):
            raise SystemExit(f"--ports needs {len(REPLICAS)} ports: {', '.join(REPLICAS)}")
        return ports
    return [args.port_base + i for i in range(len(REPLICAS))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.universe.replicas",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--ports", help="comma-separated ports for " + ", ".join(REPLICAS))
    parser.add_argument("--port-base", type=int, default=17040, help="ports base..base+4 (default 17040)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where rendered images are kept")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="the sky's seed")
    parser.add_argument("--generation", type=int, default=0, help="archive generation to start with")
    args = parser.parse_args(argv)
    ports = parse_ports(args)

    sky = Sky(args.seed)
    args.cache.mkdir(parents=True, exist_ok=True)
    servers = {
        "esahubble": ArchiveReplica("esahubble", sky, args.cache, generation=args.generation, port=ports[0]),
        "esawebb": ArchiveReplica("esawebb", sky, args.cache, generation=args.generation, port=ports[1]),
        "hips2fits": Hips2FitsReplica(sky, port=ports[2]),
        "gaia": GaiaTapReplica(sky, port=ports[3]),
        "sesame": SesameReplica(port=ports[4]),
    }
    for name, server in servers.items():
        server.start()
        print(f"{name:<10} {server.url}", flush=True)

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.wait(0.2):
        pass
    for server in servers.values():
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
