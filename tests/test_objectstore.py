"""Our object-store layer against a real S3 server (SeaweedFS): atomic writes,
checksums verified on read, clear errors."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.localstack.stack import REPO_ROOT, Stack
from services.runtime.objectstore import (
    INCOMING_PREFIX,
    IntegrityError,
    ObjectNotFound,
    ObjectStore,
    StoreUnavailable,
)

BUCKET = "cutouts"


def test_bytes_and_json_round_trip_with_checksum(store: ObjectStore) -> None:
    data = os.urandom(300_000)
    info = store.put_bytes(BUCKET, "t/roundtrip.bin", data, "image/png", {"survey": "dss2-color"})
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert store.get_bytes(BUCKET, "t/roundtrip.bin") == data
    stat = store.stat(BUCKET, "t/roundtrip.bin")
    assert stat is not None
    assert (stat.size, stat.sha256, stat.content_type) == (len(data), info.sha256, "image/png")
    assert stat.metadata["survey"] == "dss2-color"

    store.put_json(BUCKET, "t/meta.json", {"id": "heic0506a", "ra": 202.47})
    assert store.get_json(BUCKET, "t/meta.json") == {"id": "heic0506a", "ra": 202.47}


def test_rewrite_of_same_key_is_idempotent(store: ObjectStore) -> None:
    store.put_bytes(BUCKET, "t/idem.bin", b"same")
    store.put_bytes(BUCKET, "t/idem.bin", b"same")
    assert store.list_keys(BUCKET, "t/idem") == ["t/idem.bin"]


def test_stream_of_unknown_length_multipart(store: ObjectStore) -> None:
    chunks = [os.urandom(1024 * 1024) for _ in range(20)]  # > one 16 MiB part
    info = store.put_stream(BUCKET, "t/stream.bin", iter(chunks), "application/fits")
    whole = b"".join(chunks)
    assert info.size == len(whole) and info.sha256 == hashlib.sha256(whole).hexdigest()
    assert store.get_bytes(BUCKET, "t/stream.bin") == whole
    assert store.stat(BUCKET, "t/stream.bin").content_type == "application/fits"
    # The staging copy is gone, and never listed anyway.
    raw = [o.object_name for o in store.client.list_objects(BUCKET, prefix=INCOMING_PREFIX, recursive=True)]
    assert raw == []


def test_file_upload_and_verified_download(store: ObjectStore, tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(18 * 1024 * 1024))
    store.put_file(BUCKET, "t/file.bin", source)
    target = tmp_path / "out" / "copy.bin"
    info = store.download(BUCKET, "t/file.bin", target)
    assert target.read_bytes() == source.read_bytes()
    assert info.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert [p.name for p in target.parent.iterdir()] == ["copy.bin"]  # no temp file left


def test_corrupted_object_fails_its_checksum(store: ObjectStore, tmp_path: Path) -> None:
    good = b"A" * 10_000
    info = store.put_bytes(BUCKET, "t/corrupt.bin", good)
    # Bit rot: other bytes under the key, the recorded checksum unchanged.
    bad = b"A" * 9_999 + b"B"
    store.client.put_object(BUCKET, "t/corrupt.bin", io.BytesIO(bad), len(bad), metadata={"sha256": info.sha256})
    with pytest.raises(IntegrityError, match="corrupt"):
        store.get_bytes(BUCKET, "t/corrupt.bin")
    with pytest.raises(IntegrityError):
        store.download(BUCKET, "t/corrupt.bin", tmp_path / "x.bin")
    assert not (tmp_path / "x.bin").exists()
    assert store.get_bytes(BUCKET, "t/corrupt.bin", verify=False) == bad


def test_object_written_without_our_layer_is_refused(store: ObjectStore) -> None:
    store.client.put_object(BUCKET, "t/foreign.bin", io.BytesIO(b"x"), 1)
    with pytest.raises(IntegrityError, match="no recorded sha256"):
        store.get_bytes(BUCKET, "t/foreign.bin")


def test_write_killed_halfway_leaves_no_visible_object(stack: Stack, store: ObjectStore) -> None:
    key = "t/killed.bin"
    writer = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.slow_writer",
            stack.layout.s3_endpoint,
            stack.access_key,
            stack.secret_key,
            BUCKET,
            key,
            "60",
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout is not None
    assert writer.stdout.readline().strip() == "writing"
    writer.send_signal(signal.SIGKILL)
    writer.wait(10)
    assert store.stat(BUCKET, key) is None
    assert key not in store.list_keys(BUCKET, "t/")
    with pytest.raises(ObjectNotFound, match=f"{BUCKET}/{key} does not exist"):
        store.get_bytes(BUCKET, key)


def test_missing_object_and_bucket_are_not_found(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound):
        store.get_json(BUCKET, "t/never-written.json")
    with pytest.raises(ObjectNotFound):
        store.get_bytes("no-such-bucket", "x")
    assert store.stat(BUCKET, "t/never-written.json") is None


def test_wrong_credentials_and_unreachable_store_are_unavailable(stack: Stack) -> None:
    wrong = ObjectStore(stack.layout.s3_endpoint, stack.access_key, "not-the-secret", retries=0)
    with pytest.raises(StoreUnavailable, match="PSS_S3_SECRET_KEY"):
        wrong.check()
    nowhere = ObjectStore("127.0.0.1:1", "a", "b", retries=0, timeout_s=1)
    with pytest.raises(StoreUnavailable, match="connection refused"):
        nowhere.put_bytes(BUCKET, "k", b"x")


def test_listing_by_prefix(store: ObjectStore) -> None:
    for name in ("a/1.json", "a/2.json", "b/1.json"):
        store.put_json("curation", f"list-test/{name}", {})
    assert store.list_keys("curation", "list-test/a/") == ["list-test/a/1.json", "list-test/a/2.json"]
    assert len(store.list_keys("curation", "list-test/")) == 3
