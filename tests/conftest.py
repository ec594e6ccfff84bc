"""Shared fixtures: one real local stack for the session (SeaweedFS S3, the real
Triton binary, every service) on free ports, so parallel runs never collide."""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.localstack.stack import Stack, StackError
from services.runtime.objectstore import ObjectStore

# sky, replica and client of the hips2fits stand-in (module scoped), for the tests that use them.
pytest_plugins = ["tests.support.hips2fits_fixtures"]


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # Free ports are picked, not reserved: another process may take one before our
    # component binds it. Such a start fails cleanly, so try again on new ports.
    for attempt in range(3):
        root = tmp_path_factory.mktemp("stack")
        stack = Stack.ephemeral(root, extra_env={"PSS_JOB_LEASE_S": "3", "PSS_JOB_SCAN_S": "0.5"})
        try:
            stack.start(timeout_s=180)
            break
        except StackError as exc:
            warnings.warn(f"local stack start {attempt + 1} failed, retrying on other ports: {exc}", stacklevel=1)
    else:
        pytest.fail("the local stack did not start in 3 attempts (see warnings)")
    try:
        yield stack
    finally:
        stack.stop()
        shutil.rmtree(root / "s3", ignore_errors=True)


@pytest.fixture(scope="session")
def store(stack: Stack) -> ObjectStore:
    return stack.store()


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path / "logs"
