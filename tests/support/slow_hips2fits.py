"""A hips2fits stand-in that answers slowly and counts the requests it is serving at once."""

from __future__ import annotations

import threading
import time

from services.universe.replicas.hips2fits import Hips2FitsReplica
from services.universe.replicas.httpbase import Request, Response
from services.universe.sky import Sky


class SlowReplica(Hips2FitsReplica):
    """The stand-in answering each cutout after ``delay_s``, counting the requests it is serving."""

    def __init__(self, sky: Sky, delay_s: float) -> None:
        super().__init__(sky)
        self.delay_s = delay_s
        self.in_flight = 0
        self.peak = 0
        self._gauge = threading.Lock()

    def _cutout(self, request: Request) -> Response:
        with self._gauge:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        try:
            time.sleep(self.delay_s)
            return super()._cutout(request)
        finally:
            with self._gauge:
                self.in_flight -= 1
