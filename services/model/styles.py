"""The outreach style the generator renders: which telescope's look (shared by trainer and serving).

A survey cutout cannot tell the model whether to render Hubble's or Webb's look: the same field
comes out blue-white in one archive's images and orange-red in the other's. So the style is an
input, a code in [0, 1] (0 Hubble, 1 Webb) fed to the generator beside the fidelity, learned from
each training pair's archive and chosen by the user at serving time.
"""

from __future__ import annotations

STYLES: dict[str, float] = {"hubble": 0.0, "webb": 1.0}
DEFAULT = "hubble"
# The ESA archive a dataset pair's outreach image comes from (the manifest's `source`) -> style.
SOURCES: dict[str, str] = {"esahubble": "hubble", "esawebb": "webb"}


def code(name: str) -> float:
    """The generator's style input for a style name ("hubble", "webb")."""
    try:
        return STYLES[name]
    except KeyError:
        raise ValueError(f"unknown style {name!r}: expected one of {', '.join(STYLES)}") from None


def from_source(source: str) -> str:
    """The style of a pair whose outreach image comes from `source` (esahubble, esawebb)."""
    try:
        return SOURCES[source]
    except KeyError:
        raise ValueError(f"no style for outreach source {source!r}: expected one of {', '.join(SOURCES)}") from None
