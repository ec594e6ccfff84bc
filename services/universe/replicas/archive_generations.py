"""How an archive changes between crawls. Generation 0 is the base set; each further
step publishes a few new images (newest, so ``d2d?after=`` finds them), modifies a few
(title, credit, or the image itself: a new WCS, so new pixels, AVM and validators)
and withdraws a few (404 from then on). Only plain observations change, never an
edge case, so every edge case stays in every generation.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from services.universe.replicas.archive_avm import FieldWcs
from services.universe.replicas.archive_catalogue import (
    GENERATION_BASE,
    PROFILES,
    SURNAMES,
    Observation,
    seeded_rng,
    site_code,
    sky_observation,
)

if TYPE_CHECKING:
    from services.universe.sky import Sky

GENERATION_STEP = {"added": 3, "modified": 3, "withdrawn": 2}


@dataclass(frozen=True)
class Changes:
    added: tuple[str, ...] = ()
    modified: dict[str, tuple[str, ...]] = field(default_factory=dict)  # id -> changed fields
    withdrawn: tuple[str, ...] = ()


def _plain(observations: list[Observation]) -> list[Observation]:
    """Ordinary observations a generation may modify or withdraw (never an edge case)."""
    return sorted(
        (o for o in observations if o.type == "Observation" and o.wcs and not o.edge_cases), key=lambda o: o.id
    )


def apply_generation(
    sky: Sky, site: str, base: list[Observation], generation: int, used: set[str] | None = None
) -> tuple[list[Observation], Changes]:
    """The set after ``generation`` steps, and what the steps changed (cumulative)."""
    profile = PROFILES[site]
    current = {o.id: o for o in base}
    used = used if used is not None else {o.source_id for o in base if o.source_id}
    added: list[str] = []
    modified: dict[str, tuple[str, ...]] = {}
    withdrawn: list[str] = []
    for step in range(1, generation + 1):
        when = GENERATION_BASE + timedelta(weeks=step)
        rng = seeded_rng(sky.seed, site_code(site), 1000 + step)
        candidates = _plain(list(current.values()))
        picks = rng.choice(len(candidates), GENERATION_STEP["modified"] + GENERATION_STEP["withdrawn"], replace=False)
        chosen = [candidates[int(i)] for i in picks]
        for obs, what in zip(chosen[: GENERATION_STEP["modified"]], ("title", "credit", "image"), strict=True):
            # (an image added by an earlier step stays "added", whatever changes after)
            if what == "title":
                obs = replace(obs, title=f"{obs.title} (reprocessed)", modified=when)
            elif what == "credit":
                obs = replace(obs, credit=f"{obs.credit}; processing: {SURNAMES[step % len(SURNAMES)]}", modified=when)
            else:
                assert obs.wcs is not None
                wcs = FieldWcs.rounded(
                    obs.wcs.ra,
                    obs.wcs.dec,
                    obs.wcs.crpix,
                    obs.wcs.scale * 0.8,
                    obs.wcs.rotation + 25,
                    obs.wcs.width,
                    obs.wcs.height,
                )
                obs = replace(obs, wcs=wcs, label_wcs=wcs, modified=when, image_modified=when, version=obs.version + 1)
            current[obs.id] = obs
            if obs.id not in added:
                modified[obs.id] = (*modified.get(obs.id, ()), what)
        for obs in chosen[GENERATION_STEP["modified"] :]:
            del current[obs.id]
            modified.pop(obs.id, None)
            if obs.id in added:
                added.remove(obs.id)  # came and went: no change relative to generation 0
            else:
                withdrawn.append(obs.id)
        new = [sky_observation(sky, profile, 100 + j, used, step) for j in range(GENERATION_STEP["added"])]
        for j, obs in enumerate(new):
            prefix = "heic" if profile.style == "hubble" else "weic"
            stem = f"{prefix}{when.year % 100:02d}{60 + 3 * step + j:02d}"
            obs = replace(obs, id=f"{stem}a", release=when - timedelta(hours=j), modified=when - timedelta(hours=j))
            current[obs.id] = obs
            added.append(obs.id)
    ordered = sorted(current.values(), key=lambda o: (o.release, o.id), reverse=True)
    return ordered, Changes(tuple(added), modified, tuple(withdrawn))


def generation_date(generation: int) -> datetime:
    return GENERATION_BASE + timedelta(weeks=generation)
