"""The object-store layer every service uses (S3 API through the ``minio`` client).

Guarantees, whatever the caller does:
- an object is either wholly there or absent: bytes and files go up in one PUT
  (multipart uploads become visible only on completion); streams of unknown
  length are staged under ``_incoming/`` and published by a server-side copy;
- every object carries its SHA-256 in metadata (``x-amz-meta-sha256``) and reads
  verify it, so silent corruption is an error, never data;
- store errors become domain errors: missing objects NotFound, an unreachable or
  refusing store Unavailable, with the bucket/key in the message.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import urllib3
from minio import Minio
from minio.commonconfig import REPLACE, CopySource
from minio.error import S3Error

from services.runtime.config import Config
from services.runtime.errors import NotFound, ServiceError, Unavailable

# The buckets of the object-store contract (DESIGN.md) plus `jobs` for job state.
BUCKETS: tuple[str, ...] = (
    "archive",
    "crawl-state",
    "cutouts",
    "curation",
    "datasets",
    "models",
    "renders",
    "jobs",
)
INCOMING_PREFIX = "_incoming/"
SHA256_META = "sha256"
_CHUNK = 1024 * 1024
_PART_SIZE = 16 * 1024 * 1024


class IntegrityError(ServiceError):
    """An object's bytes do not match the checksum recorded when it was written."""


class ObjectNotFound(NotFound):
    pass


class StoreUnavailable(Unavailable):
    pass


@dataclass(frozen=True)
class ObjectInfo:
    bucket: str
    key: str
    size: int
    etag: str = ""
    sha256: str = ""
    content_type: str = ""
    last_modified: datetime | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    def ref(self) -> dict[str, Any]:
        """What a record keeps to find this object again and check it: bucket, key, sha256, size."""
        return {"bucket": self.bucket, "key": self.key, "sha256": self.sha256, "size": self.size}


def _user_metadata(headers: Any) -> dict[str, str]:
    """x-amz-meta-* headers, lower-cased and without the prefix."""
    out: dict[str, str] = {}
    for name, value in (headers or {}).items():
        lowered = name.lower()
        if lowered.startswith("x-amz-meta-"):
            out[lowered[len("x-amz-meta-") :]] = value
    return out


def _reason(exc: BaseException) -> str:
    """The root cause of a connection failure in a few words."""
    reason = getattr(exc, "reason", None) or exc
    text = str(reason)
    for needle, short in (
        ("Connection refused", "connection refused"),
        ("timed out", "timed out"),
        ("Name or service not known", "unknown host"),
        ("Temporary failure in name resolution", "unknown host"),
    ):
        if needle in text:
            return short
    return f"{type(reason).__name__}: {text[:200]}"


class _HashingReader(io.RawIOBase):
    """A file-like view of an iterable of chunks that hashes what is read.

    A bytearray buffer: minio reads a whole part (16 MiB) at a time, and
    rebuilding an immutable bytes buffer per small chunk would cost quadratic time.
    """

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buffer = bytearray()
        self.sha256 = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buffer) < n:
            try:
                self._buffer += next(self._chunks)
            except StopIteration:
                break
        take = len(self._buffer) if n < 0 else min(n, len(self._buffer))
        data = bytes(self._buffer[:take])
        del self._buffer[:take]
        self.sha256.update(data)
        self.size += len(data)
        return data


class ObjectStore:
    """Our layer over one S3 endpoint. Thread-safe (the minio client is)."""

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        *,
        secure: bool = False,
        region: str = "us-east-1",
        timeout_s: float = 10.0,
        retries: int = 3,
    ) -> None:
        self.endpoint = endpoint
        # Bounded retries with backoff on transient failures, and timeouts, so an
        # unreachable store fails in seconds instead of hanging a call.
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=min(timeout_s, 5.0), read=timeout_s),
            retries=urllib3.Retry(
                total=retries,
                backoff_factor=0.2,
                status_forcelist=(500, 502, 503, 504),
                allowed_methods=None,
            ),
            maxsize=32,
        )
        self.client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
            http_client=http,
        )

    @classmethod
    def from_config(cls, cfg: Config) -> ObjectStore:
        return cls(
            cfg["S3_ENDPOINT"],
            cfg["S3_ACCESS_KEY"],
            cfg["S3_SECRET_KEY"],
            secure=cfg["S3_SECURE"],
            region=cfg["S3_REGION"],
            timeout_s=cfg["S3_TIMEOUT_S"],
        )

    # -- errors ---------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self, bucket: str, key: str = "") -> Iterator[None]:
        where = f"{bucket}/{key}" if key else bucket
        try:
            yield
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchBucket", "NoSuchObject", "NoSuchVersion"):
                raise ObjectNotFound(f"{where} does not exist in the object store") from None
            if exc.code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise StoreUnavailable(
                    f"object store at {self.endpoint} refused access to {where} ({exc.code}): "
                    "check PSS_S3_ACCESS_KEY / PSS_S3_SECRET_KEY"
                ) from None
            raise StoreUnavailable(f"object store error on {where}: {exc.code}: {exc.message}") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise StoreUnavailable(
                f"object store at {self.endpoint} unreachable ({_reason(exc)}) while accessing {where}"
            ) from None

    # -- buckets --------------------------------------------------------------

    def check(self) -> None:
        """Fail fast (StoreUnavailable) when the store cannot be reached or refuses us."""
        with self._errors("the bucket list"):
            self.client.list_buckets()

    def ensure_buckets(self, names: Iterable[str] = BUCKETS) -> list[str]:
        """Create the missing buckets; returns those created. Idempotent."""
        created = []
        for name in names:
            with self._errors(name):
                if not self.client.bucket_exists(name):
                    try:
                        self.client.make_bucket(name)
                        created.append(name)
                    except S3Error as exc:  # created meanwhile by another process
                        if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                            raise
        return created

    # -- writes ---------------------------------------------------------------

    def put_bytes(
        self,
        bucket: str,
        key: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        metadata: dict[str, str] | None = None,
    ) -> ObjectInfo:
        digest = hashlib.sha256(data).hexdigest()
        meta = {**(metadata or {}), SHA256_META: digest}
        with self._errors(bucket, key):
            result = self.client.put_object(
                bucket, key, io.BytesIO(data), len(data), content_type=content_type, metadata=meta
            )
        return ObjectInfo(bucket, key, len(data), result.etag or "", digest, content_type, None, meta)

    def put_file(
        self,
        bucket: str,
        key: str,
        path: str | os.PathLike[str],
        content_type: str = "application/octet-stream",
        metadata: dict[str, str] | None = None,
    ) -> ObjectInfo:
        """Upload a local file: hashed first, then one (multipart) upload, atomic."""
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
        meta = {**(metadata or {}), SHA256_META: digest.hexdigest()}
        size = os.path.getsize(path)
        with self._errors(bucket, key):
            result = self.client.fput_object(
                bucket, key, str(path), content_type=content_type, metadata=meta, part_size=_PART_SIZE
            )
        return ObjectInfo(bucket, key, size, result.etag or "", meta[SHA256_META], content_type, None, meta)

    def put_stream(
        self,
        bucket: str,
        key: str,
        chunks: Iterable[bytes],
        content_type: str = "application/octet-stream",
        metadata: dict[str, str] | None = None,
    ) -> ObjectInfo:
        """Upload a stream of unknown length without ever exposing a partial object.

        The bytes go to a staging key (hashed on the way), then a server-side copy
        publishes them under ``key`` with the checksum in metadata.
        """
        staging = f"{INCOMING_PREFIX}{uuid.uuid4().hex}"
        reader = _HashingReader(chunks)
        try:
            with self._errors(bucket, key):
                self.client.put_object(bucket, staging, reader, -1, content_type=content_type, part_size=_PART_SIZE)
                meta = {**(metadata or {}), SHA256_META: reader.sha256.hexdigest()}
                result = self.client.copy_object(
                    bucket,
                    key,
                    CopySource(bucket, staging),
                    metadata={**meta, "Content-Type": content_type},
                    metadata_directive=REPLACE,
                )
        finally:
            with contextlib.suppress(Exception):
                self.client.remove_object(bucket, staging)
        return ObjectInfo(bucket, key, reader.size, result.etag or "", meta[SHA256_META], content_type, None, meta)

    def put_json(self, bucket: str, key: str, value: Any, metadata: dict[str, str] | None = None) -> ObjectInfo:
        data = json.dumps(value, indent=1, sort_keys=True, default=str).encode()
        return self.put_bytes(bucket, key, data, "application/json", metadata)

    # -- reads ----------------------------------------------------------------

    def stat(self, bucket: str, key: str) -> ObjectInfo | None:
        """The object's info, or None when it does not exist."""
        try:
            with self._errors(bucket, key):
                st = self.client.stat_object(bucket, key)
        except ObjectNotFound:
            return None
        meta = _user_metadata(st.metadata)
        return ObjectInfo(
            bucket,
            key,
            st.size or 0,
            st.etag or "",
            meta.get(SHA256_META, ""),
            st.content_type or "",
            st.last_modified,
            meta,
        )

    def exists(self, bucket: str, key: str) -> bool:
        return self.stat(bucket, key) is not None

    def get_bytes(self, bucket: str, key: str, *, verify: bool = True) -> bytes:
        digest = hashlib.sha256()
        parts: list[bytes] = []
        with self._errors(bucket, key):
            response = self.client.get_object(bucket, key)
            try:
                # Hash while the bytes arrive rather than in a second pass.
                for chunk in response.stream(_CHUNK):
                    digest.update(chunk)
                    parts.append(chunk)
                expected = _user_metadata(response.headers).get(SHA256_META, "")
            finally:
                response.close()
                response.release_conn()
        if verify:
            self._verify(bucket, key, expected, digest.hexdigest())
        return b"".join(parts)

    def get_json(self, bucket: str, key: str) -> Any:
        return json.loads(self.get_bytes(bucket, key))

    def download(self, bucket: str, key: str, path: str | os.PathLike[str], *, verify: bool = True) -> ObjectInfo:
        """Stream an object to ``path``; the file appears only once complete and verified."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        try:
            with self._errors(bucket, key), os.fdopen(fd, "wb") as out:
                response = self.client.get_object(bucket, key)
                try:
                    for chunk in response.stream(_CHUNK):
                        digest.update(chunk)
                        size += len(chunk)
                        out.write(chunk)
                    headers = response.headers
                finally:
                    response.close()
                    response.release_conn()
            meta = _user_metadata(headers)
            if verify:
                self._verify(bucket, key, meta.get(SHA256_META, ""), digest.hexdigest())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return ObjectInfo(bucket, key, size, headers.get("ETag", "").strip('"'), digest.hexdigest(), "", None, meta)

    @staticmethod
    def _verify(bucket: str, key: str, expected: str, actual: str) -> None:
        if not expected:
            raise IntegrityError(f"{bucket}/{key} has no recorded sha256: it was not written by our layer")
        if expected != actual:
            raise IntegrityError(f"{bucket}/{key} is corrupt: recorded sha256 {expected[:12]}…, read {actual[:12]}…")

    # -- listing and removal --------------------------------------------------

    def list(self, bucket: str, prefix: str = "", *, recursive: bool = True) -> Iterator[ObjectInfo]:
        """Objects under ``prefix`` (staging uploads never show up)."""
        with self._errors(bucket, prefix):
            for obj in self.client.list_objects(bucket, prefix=prefix, recursive=recursive):
                if obj.object_name.startswith(INCOMING_PREFIX):
                    continue
                yield ObjectInfo(
                    bucket,
                    obj.object_name,
                    obj.size or 0,
                    (obj.etag or "").strip('"'),
                    last_modified=obj.last_modified,
                )

    def list_keys(self, bucket: str, prefix: str = "", *, recursive: bool = True) -> list[str]:
        return [o.key for o in self.list(bucket, prefix, recursive=recursive)]

    def delete(self, bucket: str, key: str) -> None:
        with self._errors(bucket, key):
            self.client.remove_object(bucket, key)
