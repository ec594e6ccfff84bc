"""One training run's process: ``python -m services.trainer.run --run-id ID``.

Reads the run (models/checkpoints/ID/run.json), resumes from its last checkpoint when there is one,
trains, reports progress to status.json, checkpoints every ``checkpoint_every`` steps and on SIGTERM,
and at the end evaluates on the dataset's test split (report.json, grid.png). The data order is a
pure function of (seed, epoch, index) and the checkpoint stores that position with the model,
optimiser and random states, so a killed run continues exactly where its checkpoint left it.
Runs the same locally (a subprocess of the trainer service) and in a Kubernetes Job on a GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from services.model.generator import GeneratorConfig
from services.model.training import GanTrainer
from services.runtime.config import load_config
from services.runtime.errors import ServiceError
from services.runtime.objectstore import ObjectStore
from services.trainer import evaluation, pairs, runs
from services.trainer.config import TrainConfig
from services.trainer.data import Position, Stream
from services.trainer.k8s_job import EXIT_BAD_RUN
from services.trainer.launch import PARENT_ENV

log = logging.getLogger("prettyspace.trainer.run")
CACHE_DIR = Path(os.environ.get("PSS_TRAIN_CACHE_DIR", "/tmp/pss-train-cache"))


class BadRun(Exception):
    """The run cannot work as asked (no such dataset, nothing to train on): retrying will not help."""


class Stop:
    """Set by SIGTERM/SIGINT: finish the step, checkpoint, exit."""

    def __init__(self) -> None:
        self.requested = False
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._set)

    def _set(self, signum: int, frame: Any) -> None:
        self.requested = True


def die_with_parent() -> None:
    """When started by a local trainer service (PSS_TRAIN_PARENT_PID): SIGTERM when it dies (Linux
    prctl PR_SET_PDEATHSIG, set here in the child: a preexec_fn in the threaded service is unsafe),
    so the run checkpoints and stops, and the job's next claim resumes it; exit at once if the
    service is already gone."""
    parent = os.environ.get(PARENT_ENV)
    if not parent or not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != int(parent):
        raise SystemExit(143)


def device_of() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_pairs(store: ObjectStore, run: dict[str, Any], scale: int) -> dict[str, list[pairs.Pair]]:
    files = pairs.load_dataset(store, run["dataset"]["name"], run["dataset"]["version"])
    by_split: dict[str, list[pairs.Pair]] = {"train": [], "validation": [], "test": []}
    for line in files.manifest:
        p = pairs.prepare_cached(store, line, files.tiles.get(line["pair"]), scale, CACHE_DIR / files.name)
        by_split.setdefault(p.split, []).append(p)
    if not by_split["train"]:
        raise BadRun(f"dataset {files.name}@{files.version} has no training pairs")
    return by_split


class Run:
    def __init__(self, store: ObjectStore, run: dict[str, Any]) -> None:
        self.store = store
        self.run = run
        self.id = run["id"]
        self.config = TrainConfig.from_dict(run["config"])
        c = self.config
        if c.threads:
            torch.set_num_threads(c.threads)
        self.device = device_of()
        self.status: dict[str, Any] = {"steps": c.steps, "step": 0, "stage": "preparing", "metrics": {}}
        self.write_status(message="fetching and preparing the dataset's pairs")
        self.pairs = load_pairs(store, run, c.scale)
        self.train = Stream(
            self.pairs["train"], c.scale, c.tile_px, c.seed, c.synthetic_fraction, window_px=c.window_px
        )
        held = self.pairs["validation"] or self.pairs["train"]
        self.validation = Stream(held, c.scale, c.tile_px, c.seed + 1000, c.synthetic_fraction, window_px=c.window_px)
        self.trainer = GanTrainer(
            GeneratorConfig.preset(c.generator, c.scale),
            lr_generator=c.lr_generator,
            lr_discriminator=c.lr_discriminator,
            warmup_steps=c.warmup_steps,
            device=self.device,
            seed=c.seed,
            amp=c.amp,
        )
        self.position = Position()
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.validations: list[dict[str, float]] = []  # fixed validation crops, from step 0 on
        restored = runs.load_checkpoint(store, self.id)
        if restored is not None:
            state, summary = restored
            self.trainer.load_state_dict(state["trainer"])
            self.position = Position.from_dict(state["position"])
            self.step = int(state["step"])
            self.history = list(state.get("history", []))
            self.validations = list(state.get("validations", []))
            self.status["metrics"] = dict(summary.get("metrics") or {})
            log.info("resumed run %s at step %d", self.id, self.step)

    def write_status(self, message: str = "", **extra: Any) -> None:
        self.status.update(extra)
        self.status["message"] = message
        runs.write_status(self.store, self.id, self.status)

    def checkpoint(self) -> None:
        state = {
            "step": self.step,
            "position": self.position.to_dict(),
            "trainer": self.trainer.state_dict(),
            "history": self.history,
            "validations": self.validations,
            "config": self.config.to_dict(),
            "generator": GeneratorConfig.preset(self.config.generator, self.config.scale).to_dict(),
        }
        runs.save_checkpoint(self.store, self.id, state, {"step": self.step, "metrics": self.status.get("metrics", {})})

    def validate(self) -> dict[str, float]:
        """Masked PSNR of the faithful and vivid outputs and of bicubic on fixed validation crops."""
        c = self.config
        sums: dict[str, float] = {}
        position = Position()
        for _ in range(c.validation_batches):
            batch, position = self.validation.batch(position, c.batch_size)
            for name, value in self.trainer.validate(batch).items():
                sums[name] = sums.get(name, 0.0) + value
        result = {f"val.{k}": v / c.validation_batches for k, v in sums.items()}
        self.validations.append({"step": float(self.step), **result})
        return result

    def train_loop(self, stop: Stop) -> str:
        """Train to the configured steps: "done", "budget" (max_minutes reached) or "signal";
        checkpointed in every case."""
        c = self.config
        started, window_start, window_step = time.monotonic(), time.monotonic(), self.step
        if self.step == 0:  # the untrained model's scores: what training is measured against
            self.status["metrics"] = self.validate()
        while self.step < c.steps:
            if stop.requested or (c.max_minutes and time.monotonic() - started > 60 * c.max_minutes):
                self.checkpoint()
                reason = "stopped by a signal" if stop.requested else f"time budget of {c.max_minutes:g} min"
                self.write_status(f"checkpointed at step {self.step} ({reason})", stage="stopped")
                return "signal" if stop.requested else "budget"
            batch, next_position = self.train.batch(self.position, c.batch_size)
            losses = self.trainer.step(batch)
            self.position, self.step = next_position, self.step + 1
            if not all(math.isfinite(v) for v in losses.values()):
                raise FloatingPointError(f"a loss is not finite at step {self.step}: {losses}")
            if self.step % c.log_every == 0 or self.step == c.steps:
                elapsed = max(time.monotonic() - window_start, 1e-9)
                rate = (self.step - window_step) * c.batch_size / elapsed
                window_start, window_step = time.monotonic(), self.step
                metrics = {**{k: v for k, v in self.status["metrics"].items() if k.startswith("val.")}, **losses}
                metrics["images_per_s"] = rate
                self.history.append({"step": float(self.step), **losses, "images_per_s": rate})
                self.write_status(
                    f"step {self.step}/{c.steps}, {rate:.1f} crops/s on {self.device.type}",
                    stage="training",
                    step=self.step,
                    metrics=metrics,
                )
            if self.step % c.validate_every == 0 or self.step == c.steps:
                self.status["metrics"] = {**self.status["metrics"], **self.validate()}
                self.write_status(f"validated at step {self.step}", step=self.step)
            if self.step % c.checkpoint_every == 0:
                self.checkpoint()
        self.checkpoint()
        return "done"

    def evaluate(self) -> None:
        self.write_status("evaluating on the test split against the baselines", stage="evaluating")
        report, grid = evaluation.evaluate_run(
            self.trainer.generator_for_export(), self.pairs, self.config, torch.device("cpu")
        )
        if grid is not None:
            self.store.put_bytes(runs.BUCKET, runs.key(self.id, "grid.png"), grid, content_type="image/png")
        self.store.put_json(runs.BUCKET, runs.key(self.id, "report.json"), {**report, "step": self.step})
        headline = {f"test.{k}": float(v) for k, v in (report.get("headline") or {}).items()}
        self.write_status("done", stage="done", metrics={**self.status["metrics"], **headline})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-id", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    stop = Stop()
    die_with_parent()
    store = ObjectStore.from_config(load_config())
    # Exit 2 when retrying cannot help: the Kubernetes Job fails at once (k8s_job.EXIT_BAD_RUN).
    try:
        record = runs.load_run(store, args.run_id)
    except ServiceError as exc:
        log.error("%s", exc)
        return EXIT_BAD_RUN
    try:
        run = Run(store, record)
    except (BadRun, ServiceError) as exc:
        log.error("run %s cannot start: %s", args.run_id, exc)
        runs.write_status(store, args.run_id, {"stage": "failed", "message": str(exc), "step": 0, "metrics": {}})
        return EXIT_BAD_RUN
    np.seterr(all="ignore")
    if run.train_loop(stop) == "signal":
        return 143  # resumed later from the checkpoint just written
    if not run.config.evaluate:
        run.write_status(f"trained to step {run.step}; evaluation off (evaluate=false)", stage="done")
    elif (runs.read_json(store, run.id, "report.json") or {}).get("step") != run.step:
        run.evaluate()  # a run that ended on its time budget is evaluated where it stopped
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
