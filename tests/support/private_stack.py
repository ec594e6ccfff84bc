"""A test module's own object store: a stack of SeaweedFS only, on free ports.

Service tests that kill and resume jobs need one: every process of a service on a store
may resume that service's orphaned jobs, so the session stack's own services must not
share the store. Use it as ``stack, store = private_stack_fixtures("cutouts")``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from deploy.localstack.stack import Stack
from services.runtime.objectstore import ObjectStore


def private_stack_fixtures(name: str) -> tuple[Any, Any]:
    @pytest.fixture(scope="module", name="stack")
    def stack_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
        stack = Stack.ephemeral(
            tmp_path_factory.mktemp(f"{name}-stack"), services=(), with_triton=False, with_replicas=False
        )
        stack.start(timeout_s=120)
        yield stack
        stack.stop()

    @pytest.fixture(scope="module", name="store")
    def store_fixture(stack: Stack) -> ObjectStore:
        return stack.store()

    return stack_fixture, store_fixture
