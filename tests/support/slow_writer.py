"""Streams one object slowly through our layer so a test can kill it halfway.

    python -m tests.support.slow_writer ENDPOINT ACCESS SECRET BUCKET KEY MEGABYTES

Prints "writing" once more than a multipart part has been sent.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator

from services.runtime.objectstore import ObjectStore


def slow_chunks(megabytes: int) -> Iterator[bytes]:
    for i in range(megabytes):
        if i == 20:  # past the first 16 MiB part: a multipart upload is under way
            print("writing", flush=True)
        yield bytes([i % 256]) * (1024 * 1024)
        time.sleep(0.02 if i < 20 else 0.5)


def main(endpoint: str, access: str, secret: str, bucket: str, key: str, megabytes: str) -> None:
    ObjectStore(endpoint, access, secret).put_stream(bucket, key, slow_chunks(int(megabytes)))


if __name__ == "__main__":
    main(*sys.argv[1:])
