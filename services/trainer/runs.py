"""Training runs in the object store: what a run is, where its files live, how they are read.

Everything of run ID lives under ``models/checkpoints/ID/``:
- ``run.json``: the request (dataset name@version, config name, resolved config), written once;
- ``state.pt`` + ``state.json``: the last checkpoint (model, optimisers, random state, data position)
  and its summary; state.json is written after state.pt, so it never names a checkpoint that is not
  wholly there;
- ``status.json``: progress for watchers (step, losses, throughput, validation), rewritten often;
- ``report.json``, ``grid.png``: the evaluation on the test split, at the end.
A run id is also the id of the trainer job that runs it.
"""

from __future__ import annotations

import io
import re
import time
from typing import Any

from services.runtime.errors import InvalidArgument, NotFound
from services.runtime.objectstore import ObjectInfo, ObjectNotFound, ObjectStore

BUCKET = "models"
PREFIX = "checkpoints"
RUN_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{2,62}$")


def validate_run_id(run_id: str, field: str = "run_id") -> str:
    if not RUN_ID_RE.match(run_id or ""):
        raise InvalidArgument(field, f"{run_id!r} is not a run id (lower-case letters, digits and '-')")
    return run_id


def key(run_id: str, name: str) -> str:
    return f"{PREFIX}/{run_id}/{name}"


def load_run(store: ObjectStore, run_id: str) -> dict[str, Any]:
    validate_run_id(run_id)
    try:
        return store.get_json(BUCKET, key(run_id, "run.json"))
    except ObjectNotFound:
        raise NotFound(f"no training run {run_id!r}: list them with `prettyspace train --list`") from None


def save_run(store: ObjectStore, run: dict[str, Any]) -> None:
    store.put_json(BUCKET, key(run["id"], "run.json"), run)


def list_runs(store: ObjectStore, limit: int = 100) -> list[dict[str, Any]]:
    """Runs, newest first."""
    runs = []
    for name in store.list_keys(BUCKET, f"{PREFIX}/"):
        if name.endswith("/run.json"):
            try:
                runs.append(store.get_json(BUCKET, name))
            except ObjectNotFound:
                continue
    runs.sort(key=lambda r: r.get("created", ""), reverse=True)
    return runs[:limit]


def read_json(store: ObjectStore, run_id: str, name: str) -> dict[str, Any] | None:
    try:
        return store.get_json(BUCKET, key(run_id, name))
    except ObjectNotFound:
        return None


def write_status(store: ObjectStore, run_id: str, status: dict[str, Any]) -> None:
    store.put_json(BUCKET, key(run_id, "status.json"), {**status, "updated": time.time()})


def save_checkpoint(store: ObjectStore, run_id: str, state: dict[str, Any], summary: dict[str, Any]) -> ObjectInfo:
    """state.pt (single PUT: wholly there or absent), then state.json naming it."""
    import torch  # here, not at import: the trainer service starts without loading torch

    buf = io.BytesIO()
    torch.save(state, buf)
    info = store.put_bytes(BUCKET, key(run_id, "state.pt"), buf.getvalue(), content_type="application/octet-stream")
    store.put_json(BUCKET, key(run_id, "state.json"), {**summary, "sha256": info.sha256, "size": info.size})
    return info


def load_checkpoint(store: ObjectStore, run_id: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(state, summary) of the last checkpoint, or None before the first one."""
    import torch

    summary = read_json(store, run_id, "state.json")
    if summary is None:
        return None
    data = store.get_bytes(BUCKET, key(run_id, "state.pt"))
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    if state.get("step") != summary.get("step"):  # state.pt newer than state.json: a torn save
        summary = {**summary, "step": state.get("step")}
    return state, summary
