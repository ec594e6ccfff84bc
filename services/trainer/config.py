"""Training configurations: the named presets and the overrides a request may give.

``demo`` trains the compact generator on 2 CPU cores inside the demo's time budget; ``full`` is the
GPU configuration. A request names one and may override any field by name (``overrides`` map of
strings, parsed to the field's type); an unknown field or a bad value is the caller's error and is
refused before any job starts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from services.runtime.errors import InvalidArgument


@dataclass(frozen=True)
class TrainConfig:
    generator: str = "demo"  # services.model.generator preset
    scale: int = 4
    tile_px: int = 32  # training crop side on the survey grid (the target is scale times larger)
    batch_size: int = 8
    steps: int = 2000
    warmup_steps: int = 600  # pixel and consistency losses only, before the adversarial term
    lr_generator: float = 2e-4
    lr_discriminator: float = 4e-4  # a faster critic (two time-scale update rule)
    synthetic_fraction: float = 0.5  # crops whose input is a synthetic observation of the target
    window_px: int = 64  # survey-pixel window a synthetic crop is degraded (and normalised) on
    seed: int = 1
    log_every: int = 10
    checkpoint_every: int = 200
    validate_every: int = 250
    validation_batches: int = 4
    max_minutes: float = 13.0  # stop training (checkpointed, then evaluated) after this long; 0: no limit
    threads: int = 0  # torch CPU threads; 0: torch's default
    amp: bool = True  # mixed precision where the device supports it (CUDA)
    evaluate: bool = True  # the final evaluation on the test split (report.json, grid.png)
    eval_pairs: int = 0  # test pairs in the final evaluation; 0: all
    eval_window_px: int = 64  # evaluation fields, survey pixels
    eval_windows_per_pair: int = 4
    eval_two_sample_steps: int = 300  # training steps of the two-sample classifier

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


PRESETS: dict[str, TrainConfig] = {
    "demo": TrainConfig(),
    "full": TrainConfig(
        generator="full",
        max_minutes=0.0,
        tile_px=48,
        batch_size=16,
        steps=200_000,
        warmup_steps=20_000,
        checkpoint_every=2000,
        validate_every=5000,
        validation_batches=16,
        log_every=50,
    ),
    # A handful of steps on a tiny model: tests and smoke checks.
    "tiny": TrainConfig(
        tile_px=16,
        batch_size=2,
        steps=6,
        warmup_steps=3,
        log_every=1,
        checkpoint_every=2,
        validate_every=3,
        validation_batches=1,
        window_px=32,
        max_minutes=0.0,
        eval_window_px=32,
        eval_windows_per_pair=1,
        eval_two_sample_steps=30,
    ),
}


def _parse(field: dataclasses.Field[Any], raw: str) -> Any:
    kind = field.type if isinstance(field.type, str) else field.type.__name__
    text = raw.strip()
    if kind == "bool":
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError("expected true or false")
    if kind == "int":
        return int(text)
    if kind == "float":
        return float(text)
    return text


def resolve(name: str, overrides: dict[str, str] | None = None) -> TrainConfig:
    """The preset ``name`` with ``overrides`` applied and checked; InvalidArgument naming the field."""
    if name not in PRESETS:
        raise InvalidArgument("config", f"unknown config {name!r}: one of {', '.join(PRESETS)}")
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    changes: dict[str, Any] = {}
    for key, raw in (overrides or {}).items():
        if key not in fields:
            raise InvalidArgument(f"overrides[{key}]", f"not a training setting: one of {', '.join(fields)}")
        try:
            changes[key] = _parse(fields[key], raw)
        except ValueError as exc:
            raise InvalidArgument(f"overrides[{key}]", f"{raw!r}: {exc}") from None
    config = dataclasses.replace(PRESETS[name], **changes)
    check(config)
    return config


def check(c: TrainConfig) -> None:
    from services.model.generator import PRESETS as GENERATORS

    rules = (
        ("generator", c.generator in GENERATORS, f"one of {', '.join(GENERATORS)}"),
        ("scale", c.scale in (2, 4), "2 or 4"),
        ("tile_px", 8 <= c.tile_px <= 256, "between 8 and 256 survey pixels"),
        ("batch_size", 1 <= c.batch_size <= 256, "between 1 and 256"),
        ("steps", c.steps >= 1, "at least 1"),
        ("warmup_steps", c.warmup_steps >= 0, "0 or more"),
        ("lr_generator", 0 < c.lr_generator < 1, "in (0, 1)"),
        ("lr_discriminator", 0 < c.lr_discriminator < 1, "in (0, 1)"),
        ("synthetic_fraction", 0 <= c.synthetic_fraction <= 1, "in [0, 1]"),
        ("window_px", c.window_px >= c.tile_px, f"at least tile_px ({c.tile_px})"),
        ("log_every", c.log_every >= 1, "at least 1"),
        ("checkpoint_every", c.checkpoint_every >= 1, "at least 1"),
        ("validate_every", c.validate_every >= 1, "at least 1"),
        ("validation_batches", c.validation_batches >= 1, "at least 1"),
        ("max_minutes", c.max_minutes >= 0, "0 (no limit) or more"),
        ("threads", c.threads >= 0, "0 (default) or more"),
        ("eval_pairs", c.eval_pairs >= 0, "0 (all) or more"),
        ("eval_window_px", 16 <= c.eval_window_px <= 1024, "between 16 and 1024 survey pixels"),
        ("eval_windows_per_pair", c.eval_windows_per_pair >= 1, "at least 1"),
        ("eval_two_sample_steps", c.eval_two_sample_steps >= 1, "at least 1"),
    )
    for name, ok, expected in rules:
        if not ok:
            raise InvalidArgument(f"config.{name}", f"{getattr(c, name)!r} is out of range: expected {expected}")
