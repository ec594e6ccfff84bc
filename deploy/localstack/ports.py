"""Free TCP ports on 127.0.0.1, so parallel stacks (tests) never collide."""

from __future__ import annotations

import random
import socket


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_block(size: int, extra_offsets: tuple[int, ...] = (), low: int = 20000, high: int = 40000) -> int:
    """A base port B with B..B+size-1 and B+each extra offset all free."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(low, high - size)
        if all(port_free(base + i) for i in (*range(size), *extra_offsets)):
            return base
    raise RuntimeError(f"no block of {size} free ports found between {low} and {high}")
