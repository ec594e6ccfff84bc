"""The curator's blacklist end to end: a real curator service process (gRPC) over a real
S3 store (a private stack): seeded from the shipped list, edited through the API, kept
across a restart, and bad requests answered with clear statuses."""

from __future__ import annotations

import json

import grpc
import pytest

from services.api import crawler_pb2, curator_pb2
from services.client.clients import CuratorClient
from services.curator import blacklist
from tests.support.private_stack import private_stack_fixtures
from tests.support.processes import service_process

HUBBLE, WEBB = crawler_pb2.SOURCE_ESAHUBBLE, crawler_pb2.SOURCE_ESAWEBB


stack, store = private_stack_fixtures("curator")


@pytest.fixture(scope="module")
def service(stack, tmp_path_factory):
    proc = service_process(stack, ["services", "curator"], tmp_path_factory.mktemp("curator-logs"), "curator")
    proc.start()
    yield proc
    proc.stop()


def key(source: int, image_id: str) -> crawler_pb2.ObservationKey:
    return crawler_pb2.ObservationKey(source=source, image_id=image_id)


def call(service, method: str, request, timeout: float = 10):
    with CuratorClient(service.address) as client:
        return getattr(client.stub, method)(request, timeout=timeout)


def get_blacklist(service) -> curator_pb2.Blacklist:
    return call(service, "GetBlacklist", curator_pb2.GetBlacklistRequest())


def set_entry(service, source: int, image_id: str, reason: str) -> curator_pb2.Blacklist:
    return call(
        service, "SetBlacklistEntry", curator_pb2.BlacklistEntry(observation=key(source, image_id), reason=reason)
    )


def remove_entry(service, source: int, image_id: str) -> curator_pb2.Blacklist:
    return call(service, "RemoveBlacklistEntry", key(source, image_id))


def as_dict(listing: curator_pb2.Blacklist) -> dict[tuple[int, str], str]:
    return {(e.observation.source, e.observation.image_id): e.reason for e in listing.entries}


def stored(store) -> dict:
    return json.loads(store.get_bytes(blacklist.BUCKET, blacklist.KEY))["entries"]


def test_every_seed_id_has_a_source():
    ids = blacklist.seed_ids()
    assert len(ids) == len(set(ids)) == 76
    sources = {image_id: blacklist.seed_source(image_id) for image_id in ids}
    assert sources["heic0207g"] == sources["opo9524c1"] == sources["potw1950a"] == "esahubble"
    assert sources["weic2209a"] == sources["potm2207a"] == "esawebb"
    with pytest.raises(ValueError, match="no known prefix"):
        blacklist.seed_source("xyz0101a")


def test_an_empty_store_is_seeded_once_with_the_76_ids_and_their_reason(service, store):
    store.delete(blacklist.BUCKET, blacklist.KEY)  # whatever earlier tests did: start from nothing
    listing = get_blacklist(service)
    entries = as_dict(listing)
    assert len(entries) == 76
    assert set(entries.values()) == {blacklist.SEED_REASON}
    assert (HUBBLE, "heic0207g") in entries and (WEBB, "weic2209a") in entries
    assert (HUBBLE, "ann1311a") in entries and (WEBB, "VV191b") in entries
    ordered = [(e.observation.source, e.observation.image_id) for e in listing.entries]
    assert ordered == sorted(ordered)  # a stable order: by source, then id
    document = stored(store)
    assert document["esahubble/heic0207g"]["origin"] == "seed"
    assert {e["origin"] for e in document.values()} == {"seed"}
    assert all(e["reason"] and e["added_at"] for e in document.values())
    # A removed seed entry stays removed: the seed is written once, never merged back.
    assert (HUBBLE, "heic0207g") not in as_dict(remove_entry(service, HUBBLE, "heic0207g"))
    assert (HUBBLE, "heic0207g") not in as_dict(get_blacklist(service))
    assert len(get_blacklist(service).entries) == 75


def test_set_adds_then_replaces_and_remove_removes(service, store):
    before = as_dict(get_blacklist(service))
    after = as_dict(set_entry(service, WEBB, "weic9901a", "  misaligned by 30 px  "))
    assert after == {**before, (WEBB, "weic9901a"): "misaligned by 30 px"}
    assert stored(store)["esawebb/weic9901a"]["origin"] == "api"
    # The same observation again replaces its entry; the same id under the other source is another entry.
    replaced = as_dict(set_entry(service, WEBB, "weic9901a", "black chip gap"))
    assert replaced[(WEBB, "weic9901a")] == "black chip gap" and len(replaced) == len(after)
    other = as_dict(set_entry(service, HUBBLE, "weic9901a", "same id, other archive"))
    assert len(other) == len(after) + 1
    assert stored(store)["esawebb/weic9901a"]["reason"] == "black chip gap"
    # A seed entry can be given a reason of its own.
    assert as_dict(set_entry(service, HUBBLE, "opo0907c", "borders"))[(HUBBLE, "opo0907c")] == "borders"
    assert stored(store)["esahubble/opo0907c"]["origin"] == "api"
    removed = as_dict(remove_entry(service, WEBB, "weic9901a"))
    assert (WEBB, "weic9901a") not in removed and (HUBBLE, "weic9901a") in removed
    assert "esawebb/weic9901a" not in stored(store)
    remove_entry(service, HUBBLE, "weic9901a")
    assert as_dict(get_blacklist(service)) == {**before, (HUBBLE, "opo0907c"): "borders"}


def test_edits_persist_across_a_restart(stack, store, tmp_path):
    first = service_process(stack, ["services", "curator"], tmp_path, "curator-a").start()
    try:
        set_entry(first, HUBBLE, "heic9902b", "wrong coordinates in the AVM")
        remove_entry(first, WEBB, "weic2208b")
        expected = as_dict(get_blacklist(first))
    finally:
        first.stop()
    second = service_process(stack, ["services", "curator"], tmp_path, "curator-b").start()
    try:
        again = as_dict(get_blacklist(second))
        assert again == expected
        assert again[(HUBBLE, "heic9902b")] == "wrong coordinates in the AVM" and (WEBB, "weic2208b") not in again
        remove_entry(second, HUBBLE, "heic9902b")
    finally:
        second.stop()


def test_is_blacklisted_reads_a_loaded_document(service, store):
    set_entry(service, WEBB, "weic9903c", "odd black border")
    loaded = blacklist.load(store)
    assert blacklist.is_blacklisted(loaded, "esawebb", "weic9903c")
    assert not blacklist.is_blacklisted(loaded, "esahubble", "weic9903c")
    assert not blacklist.is_blacklisted(loaded, "esawebb", "weic9999z")
    remove_entry(service, WEBB, "weic9903c")
    assert not blacklist.is_blacklisted(blacklist.load(store), "esawebb", "weic9903c")


LONG = "x" * (blacklist.MAX_REASON_CHARS + 1)


@pytest.mark.parametrize(
    ("request_fields", "needles"),
    [
        ({"observation": key(HUBBLE, ""), "reason": "r"}, ["observation.image_id", "not an image id"]),
        ({"observation": key(HUBBLE, "heic/0207g"), "reason": "r"}, ["observation.image_id", "'heic/0207g'"]),
        ({"observation": key(HUBBLE, "heic 0207g"), "reason": "r"}, ["observation.image_id", "1 to 64"]),
        ({"observation": key(HUBBLE, "a" * 65), "reason": "r"}, ["observation.image_id", "1 to 64"]),
        ({"observation": key(HUBBLE, "heic0207g"), "reason": ""}, ["reason", "is required"]),
        ({"observation": key(HUBBLE, "heic0207g"), "reason": " \n "}, ["reason", "is required"]),
        ({"observation": key(HUBBLE, "heic0207g"), "reason": LONG}, ["reason", "501 characters", "at most 500"]),
        ({"observation": key(0, "heic0207g"), "reason": "r"}, ["observation.source", "unknown source 0"]),
        ({"observation": key(7, "heic0207g"), "reason": "r"}, ["observation.source", "SOURCE_ESAHUBBLE"]),
        ({"reason": "r"}, ["observation", "is required"]),
    ],
)
def test_bad_set_requests_are_invalid_argument_and_change_nothing(service, store, request_fields, needles):
    before = stored(store) if store.exists(blacklist.BUCKET, blacklist.KEY) else None
    with pytest.raises(grpc.RpcError) as err:
        call(service, "SetBlacklistEntry", curator_pb2.BlacklistEntry(**request_fields))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    for needle in needles:
        assert needle in err.value.details()
    if before is not None:
        assert stored(store) == before


def test_a_reason_of_exactly_the_limit_is_accepted(service):
    reason = "y" * blacklist.MAX_REASON_CHARS
    assert as_dict(set_entry(service, HUBBLE, "heic9904d", reason))[(HUBBLE, "heic9904d")] == reason
    remove_entry(service, HUBBLE, "heic9904d")


@pytest.mark.parametrize(
    ("observation", "needles"),
    [
        (key(HUBBLE, "bad id!"), ["image_id", "not an image id"]),
        (key(0, "heic0207g"), ["source", "unknown source 0"]),
    ],
)
def test_bad_remove_requests_are_invalid_argument(service, observation, needles):
    with pytest.raises(grpc.RpcError) as err:
        call(service, "RemoveBlacklistEntry", observation)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    for needle in needles:
        assert needle in err.value.details()


def test_removing_an_absent_entry_is_not_found(service):
    with pytest.raises(grpc.RpcError) as err:
        remove_entry(service, WEBB, "weic0000z")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "esawebb/weic0000z is not on the blacklist" in err.value.details()
    # A seed id under the wrong source is absent too.
    with pytest.raises(grpc.RpcError) as err:
        remove_entry(service, WEBB, "heic0206g")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
