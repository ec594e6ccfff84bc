"""Start one service: ``python -m services <crawler|cutouts|curator|trainer|gateway>``,
or create the buckets: ``python -m services bootstrap-buckets``.

One container image serves every service; its argument picks which.
"""

from __future__ import annotations

import importlib
import os
import sys

# gRPC core reads this when it is first imported: its own copy of bind errors
# would otherwise precede our one-line message.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

SERVICES = ("crawler", "cutouts", "curator", "trainer", "gateway")
USAGE = f"usage: python -m services <{'|'.join(SERVICES)}|bootstrap-buckets>"


def bootstrap_buckets() -> int:
    from services.runtime.config import ConfigError, load_config
    from services.runtime.errors import ServiceError
    from services.runtime.objectstore import BUCKETS, ObjectStore

    try:
        store = ObjectStore.from_config(load_config())
        created = store.ensure_buckets(BUCKETS)
    except ConfigError as exc:
        print(f"bootstrap-buckets: configuration error: {exc}", file=sys.stderr)
        return 2
    except ServiceError as exc:
        print(f"bootstrap-buckets: {exc}", file=sys.stderr)
        return 1
    print(f"buckets ready: {', '.join(BUCKETS)} (created: {', '.join(created) or 'none'})")
    return 0


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(USAGE, file=sys.stderr)
        return 2
    name = argv[0]
    if name == "bootstrap-buckets":
        return bootstrap_buckets()
    if name not in SERVICES:
        print(f"unknown service {name!r}; {USAGE}", file=sys.stderr)
        return 2
    from services.runtime.server import run_service

    spec = importlib.import_module(f"services.{name}.service").SPEC
    return run_service(spec)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
