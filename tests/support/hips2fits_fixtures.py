"""Module-scoped fixtures for tests against the hips2fits stand-in, loaded for every test
module by tests/conftest.py (a module's own fixture of the same name takes precedence)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from astroquery.hips2fits import hips2fitsClass

from services.universe.replicas.hips2fits import Hips2FitsReplica
from services.universe.sky import Sky


@pytest.fixture(scope="module")
def sky() -> Sky:
    return Sky()


@pytest.fixture(scope="module")
def replica(sky: Sky) -> Iterator[Hips2FitsReplica]:
    server = Hips2FitsReplica(sky).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(replica: Hips2FitsReplica) -> hips2fitsClass:
    h = hips2fitsClass()
    h.server = replica.endpoint  # the instance attribute astroquery's requests go to
    return h
