"""Backpressure: at most `max_running` renders at once and `max_waiting` in line behind them.

A render beyond that is refused at once with RESOURCE_EXHAUSTED (the client retries later)
rather than queued without bound: every waiting render holds a gRPC thread and, soon, memory.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Gauge

from services.runtime.errors import DeadlineExceeded, ResourceExhausted

RUNNING = Gauge("pss_gateway_renders_running", "renders running now")
WAITING = Gauge("pss_gateway_renders_waiting", "renders waiting for a slot")


class Ticket:
    def __init__(self, admission: Admission, waited_behind: int) -> None:
        self.admission = admission
        self.waited_behind = waited_behind  # renders running or waiting when this one arrived
        self.running = False

    def wait(self, timeout_s: float | None, cancelled: threading.Event) -> None:
        """Block until a slot is free (DeadlineExceeded when `timeout_s` passes first)."""
        a = self.admission
        with a._cond:
            ok = a._cond.wait_for(lambda: a._running < a.max_running or cancelled.is_set(), timeout=timeout_s)
            if cancelled.is_set():
                return
            if not ok:
                raise DeadlineExceeded("the render's deadline passed while it waited for a free slot")
            a._waiting -= 1
            a._running += 1
            self.running = True
            WAITING.set(a._waiting)
            RUNNING.set(a._running)


class Admission:
    def __init__(self, max_running: int, max_waiting: int) -> None:
        self.max_running = max_running
        self.max_waiting = max_waiting
        self._cond = threading.Condition()
        self._running = 0
        self._waiting = 0

    @contextmanager
    def enter(self) -> Iterator[Ticket]:
        with self._cond:
            if self._running >= self.max_running and self._waiting >= self.max_waiting:
                raise ResourceExhausted(
                    f"the gateway is busy: {self._running} renders running and {self._waiting} waiting "
                    f"(PSS_GATEWAY_MAX_QUEUE={self.max_waiting}); retry in a few seconds"
                )
            ticket = Ticket(self, self._running + self._waiting if self._running >= self.max_running else 0)
            self._waiting += 1
            WAITING.set(self._waiting)
        try:
            yield ticket
        finally:
            with self._cond:
                if ticket.running:
                    self._running -= 1
                else:
                    self._waiting -= 1
                RUNNING.set(self._running)
                WAITING.set(self._waiting)
                self._cond.notify()

    def load(self) -> tuple[int, int]:
        with self._cond:
            return self._running, self._waiting
