"""`prettyspace crawl` without a crawler: argument errors (exit 2), the request it
builds, the final summary, and one clear line when the crawler cannot be reached
(exit 1). The crawl itself through the CLI is tested against the real crawler in
the crawler's own tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from deploy.localstack.ports import free_port
from services.api import common_pb2, crawler_pb2
from services.client import cli


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.client.cli", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# --------------------------------------------------------------------------
# Arguments


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "the following arguments are required: --source"),
        (["--source", "hubble"], "invalid choice: 'hubble'"),
        (["--source", "all", "--max-pages", "-1"], "--max-pages: expected 0 (no limit) to 4294967295, got -1"),
        (["--source", "all", "--max-pages", str(2**32)], "--max-pages: expected 0 (no limit)"),
        (["--source", "all", "--max-pages", "ten"], "--max-pages: expected a whole number, got 'ten'"),
        (["--source", "all", "--request-id", ""], "--request-id: expected a non-empty id"),
        (["--source", "all", "--request-id", " x"], "--request-id: expected a non-empty id"),
        (["--source", "all", "--timeout", "0"], "--timeout: expected a positive number of seconds"),
        (["--source", "all", "--incremental=yes"], "--incremental: ignored explicit argument 'yes'"),
        (["--source", "all", "--pages", "3"], "unrecognized arguments: --pages 3"),
    ],
)
def test_bad_arguments_exit_2_with_the_reason(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing may be contacted: point the CLI at a port where nothing listens.
    monkeypatch.setenv("PSS_CRAWLER_ADDR", f"127.0.0.1:{free_port()}")
    with pytest.raises(SystemExit) as info:
        cli.main(["crawl", *args])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert "usage: prettyspace" in err


def test_bad_arguments_exit_2_as_a_process() -> None:
    proc = run_cli("crawl", "--source", "everything", env={"PSS_CRAWLER_ADDR": f"127.0.0.1:{free_port()}"})
    assert proc.returncode == 2
    assert "invalid choice: 'everything' (choose from 'esahubble', 'esawebb', 'all')" in proc.stderr
    assert proc.stdout == ""


def test_help_lists_every_option() -> None:
    proc = run_cli("crawl", "--help")
    assert proc.returncode == 0
    for option in ("--source", "--incremental", "--max-pages", "--request-id", "--no-wait", "--json", "--address"):
        assert option in proc.stdout


def test_a_malformed_port_base_is_a_setting_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PSS_CRAWLER_ADDR", raising=False)
    monkeypatch.setenv("PSS_LOCAL_PORT_BASE", "http")
    assert cli.main(["crawl", "--source", "all"]) == 2
    assert capsys.readouterr().err.strip() == (
        "prettyspace: PSS_LOCAL_PORT_BASE='http' is invalid: expected a port between 1024 and 54000"
    )


# --------------------------------------------------------------------------
# The request


def parse(*args: str) -> crawler_pb2.StartCrawlRequest:
    return cli.crawl_request(cli.build_parser().parse_args(["crawl", *args]))


def test_request_for_each_source() -> None:
    assert list(parse("--source", "esahubble").sources) == [crawler_pb2.SOURCE_ESAHUBBLE]
    assert list(parse("--source", "esawebb").sources) == [crawler_pb2.SOURCE_ESAWEBB]
    assert list(parse("--source", "all").sources) == []  # the API's "all"


def test_request_options() -> None:
    request = parse("--source", "all", "--incremental", "--max-pages", "25", "--request-id", "nightly-2026-05-01")
    assert request.incremental is True
    assert request.max_pages == 25
    assert request.request_id == "nightly-2026-05-01"
    default = parse("--source", "esawebb")
    assert default.incremental is False and default.max_pages == 0


def test_request_always_carries_a_fresh_idempotency_key() -> None:
    """Retries of StartCrawl (on UNAVAILABLE) must never start a second crawl."""
    a, b = parse("--source", "all").request_id, parse("--source", "all").request_id
    assert a.startswith("cli-") and b.startswith("cli-") and a != b


# --------------------------------------------------------------------------
# The summary


def test_summary_prints_every_counter_sorted_and_the_error() -> None:
    job = common_pb2.Job(id="crawl-1", kind="crawl", state=common_pb2.JOB_STATE_FAILED, error="robots.txt said no")
    job.progress.done, job.progress.total = 7, 9
    job.progress.counters.update({"unchanged": 3, "new": 4, "bytes": 123456, "errors": 1, "some_future_counter": 5})
    job.result["archive"] = "s3://archive"
    job.created.FromSeconds(1_700_000_000)
    job.finished.FromSeconds(1_700_000_042)
    lines = cli.format_job_summary(job).splitlines()
    assert lines[0] == "crawl crawl-1: FAILED after 42.0 s"
    assert lines[1] == "  done: 7/9"
    names = [line.split()[0] for line in lines[2:8]]
    assert names == ["bytes", "errors", "new", "some_future_counter", "unchanged", "archive"]
    assert "  bytes                123456" in lines
    assert lines[-1] == "  error: robots.txt said no"


# --------------------------------------------------------------------------
# No crawler


def test_unreachable_crawler_is_one_line_and_exit_1() -> None:
    address = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    proc = run_cli("crawl", "--source", "all", "--incremental", "--timeout", "2", env={"PSS_CRAWLER_ADDR": address})
    assert time.monotonic() - started < 30
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"prettyspace: crawler unreachable at {address} (PSS_CRAWLER_ADDR): UNAVAILABLE")
    assert "is the crawler running?" in lines[0]


def test_unreachable_crawler_names_the_address_option(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PSS_CRAWLER_ADDR", "crawler.invalid:50051")  # not used: --address wins
    address = f"127.0.0.1:{free_port()}"
    assert cli.main(["crawl", "--source", "esawebb", "--address", address, "--timeout", "1", "--no-wait"]) == 1
    err = capsys.readouterr().err
    assert f"crawler unreachable at {address} (--address)" in err


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word (a hung peer)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def test_a_crawler_that_never_answers_times_out_with_one_line(silent_port: int) -> None:
    started = time.monotonic()
    proc = run_cli("crawl", "--source", "all", "--timeout", "1.5", env={"PSS_CRAWLER_ADDR": f"127.0.0.1:{silent_port}"})
    assert time.monotonic() - started < 30
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"crawler unreachable at 127.0.0.1:{silent_port}" in lines[0]
    assert "DEADLINE_EXCEEDED" in lines[0] or "UNAVAILABLE" in lines[0]
