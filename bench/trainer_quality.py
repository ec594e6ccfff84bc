"""Trainer quality and speed: the demo config trained on the `demo` dataset, scored against the
classical baselines in the same run.

Needs the running local stack with the demo dataset (`make demo` first). A training run is started
through the trainer service (`demo` config: 2 CPU cores, at most 15 minutes of training, then the
evaluation), followed to its end, and its report read back: on the dataset's test split (windows of
the real survey cutouts, and synthetic observations from the training family and from the held-out
family), source-pixel PSNR of bicubic, the tone curve and Richardson-Lucy against the generator at
fidelity 1 (faithful) and 0 (vivid), realism (high-frequency power ratio, two-sample classifier
accuracy, morphology KS), consistency chi^2, checkerboard excess, and issue #7's targets as pass/fail.
Speed: crops per second in the pixel-only warm-up and with the discriminator (the GAN's cost as a
ratio), and wall time. --quick: 60 steps and one window per pair (a smoke test, not figures).
"""

from __future__ import annotations

import io
import os
import time
import uuid
from pathlib import Path
from typing import Any

import torch

from bench.common import machine_info, table
from services.api import common_pb2, curator_pb2, trainer_pb2
from services.client.clients import TrainerClient
from services.runtime.config import load_config
from services.runtime.objectstore import ObjectStore
from services.trainer import runs

STACK_ENV = Path(__file__).resolve().parents[1] / ".stack" / "stack.env"
METHODS = ("bicubic", "tone-curve", "richardson-lucy", "generator-faithful", "generator-vivid")


def _stack_env() -> None:
    if not STACK_ENV.exists():
        raise SystemExit("bench trainer needs the local stack and the demo dataset: run `make demo` first")
    for line in STACK_ENV.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            os.environ.setdefault(key, value)


def run(quick: bool = False) -> dict[str, Any]:
    _stack_env()
    overrides = {"steps": "60", "eval_windows_per_pair": "1", "eval_two_sample_steps": "60"} if quick else {}
    request = trainer_pb2.StartTrainingRequest(
        dataset=curator_pb2.DatasetRef(name="demo"),
        config="demo",
        overrides=overrides,
        request_id=f"bench-{uuid.uuid4().hex}",
    )
    started = time.monotonic()
    with TrainerClient(os.environ["PSS_TRAINER_ADDR"]) as client:
        job = client.stub.StartTraining(request, timeout=60)
        job = client.jobs.follow(job.id, timeout_s=3600)
    wall = time.monotonic() - started
    if job.state != common_pb2.JOB_STATE_SUCCEEDED:
        raise SystemExit(f"training run failed: {job.error}")
    store = ObjectStore.from_config(load_config())
    rid = job.params["run_id"]
    report = store.get_json(runs.BUCKET, runs.key(rid, "report.json"))
    state = torch.load(io.BytesIO(store.get_bytes(runs.BUCKET, runs.key(rid, "state.pt"))), weights_only=False)
    warmup = int(state["config"]["warmup_steps"])
    rates = {"warm-up": [], "adversarial": []}
    for h in state["history"][1:]:  # the first window includes start-up
        rates["warm-up" if h["step"] <= warmup else "adversarial"].append(h["images_per_s"])
    speed = {k: sum(v) / len(v) if v else None for k, v in rates.items()}
    families = {}
    for family, r in report["families"].items():
        families[family] = {
            "methods": {
                m: {
                    "psnr_sources": r["methods"][m]["fidelity"]["psnr_sources"],
                    "psnr_all": r["methods"][m]["fidelity"]["psnr_all"],
                    "psnr_sources_level_matched": r["methods"][m]["fidelity"].get("psnr_sources_level_matched"),
                    "hf_power_ratio": r["methods"][m]["realism"]["hf_power_ratio"],
                    "chi2": r["methods"][m].get("consistency", {}).get("chi2"),
                    "two_sample": r["methods"][m]["realism"].get("two_sample", {}).get("accuracy"),
                    "checkerboard": r["methods"][m]["artefacts"]["checkerboard"]["excess"],
                    "sky_residual_rms": r["methods"][m]["artefacts"].get("sky_residual_rms"),
                }
                for m in METHODS
                if m in r["methods"]
            },
            "targets": {k: {"value": v.get("value"), "pass": v.get("pass")} for k, v in r["targets"].items()},
        }
    return {
        "machine": machine_info(),
        "run_id": rid,
        "steps": int(state["step"]),
        "wall_s": wall,
        "evaluation_s": report.get("seconds"),
        "windows": report.get("windows"),
        "test_pairs": report.get("pairs"),
        "crops_per_s": speed,
        "gan_cost_ratio": (speed["warm-up"] / speed["adversarial"]) if speed["adversarial"] else None,
        "families": families,
    }


def _f(v: Any, fmt: str = "{:.2f}") -> str:
    return "-" if v is None else fmt.format(v)


def render(results: dict[str, Any]) -> str:
    lines = [
        f"run {results['run_id']}: {results['steps']} steps, {results['wall_s'] / 60:.1f} min wall "
        f"(evaluation {_f(results['evaluation_s'], '{:.0f}')} s), {results['windows']} windows of "
        f"{len(results['test_pairs'])} test pairs",
        f"crops/s: warm-up {_f(results['crops_per_s']['warm-up'], '{:.1f}')}, with the discriminator "
        f"{_f(results['crops_per_s']['adversarial'], '{:.1f}')} (ratio {_f(results['gan_cost_ratio'])})",
    ]
    for family, r in results["families"].items():
        rows = [
            [
                m,
                _f(v["psnr_sources"]),
                _f(v.get("psnr_sources_level_matched")),
                _f(v["psnr_all"]),
                _f(v["hf_power_ratio"]),
                _f(v["two_sample"]),
                _f(v["chi2"]),
                _f(v.get("sky_residual_rms"), "{:.3f}"),
            ]
            for m, v in r["methods"].items()
        ]
        lines.append(f"\n{family} inputs")
        lines.append(
            table(
                ["method", "PSNR src dB", "level-matched", "PSNR all dB", "HF ratio", "2-sample", "chi2", "sky RMS"],
                rows,
            )
        )
        lines.append(
            table(
                ["target", "value", "pass"],
                [[k, _f(v["value"], "{:.3f}"), v["pass"]] for k, v in r["targets"].items()],
            )
        )
    return "\n".join(lines)
