"""One profile per archive: both ESA sites run the same CMS (Djangoplicity), so
they differ only in base URL, facility filter and names (see SITES.md)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

SOURCES = ("esahubble", "esawebb")
LICENCE = "CC BY 4.0"
LICENCE_URL = "https://creativecommons.org/licenses/by/4.0/"


@dataclass(frozen=True)
class SiteProfile:
    source: str  # "esahubble" | "esawebb": the key prefix in the archive bucket
    base_url: str  # e.g. https://esahubble.org (no trailing slash)
    facility_id: int  # the search page's facility filter (Hubble 2, Webb 1)
    display_name: str

    @property
    def host(self) -> str:
        return urlsplit(self.base_url).netloc

    def search_url(self, page: int = 1) -> str:
        """Observation-type images, as the site's own archive search lists them."""
        query = urlencode({"minimum_size": 3, "facility": self.facility_id, "type": "Observation"})
        path = "/images/archive/search/" if page == 1 else f"/images/archive/search/page/{page}/"
        return f"{self.base_url}{path}?{query}"

    def detail_url(self, image_id: str) -> str:
        return f"{self.base_url}/images/{image_id}/"

    def json_url(self, image_id: str) -> str:
        return f"{self.base_url}/images/{image_id}/api/json/"

    def feed_url(self) -> str:
        return f"{self.base_url}/images/d2d/"

    def robots_url(self) -> str:
        return f"{self.base_url}/robots.txt"


DEFAULT_URLS = {"esahubble": "https://esahubble.org", "esawebb": "https://esawebb.org"}
_FACILITY = {"esahubble": 2, "esawebb": 1}
_NAMES = {"esahubble": "ESA/Hubble", "esawebb": "ESA/Webb"}


def profile(source: str, base_url: str | None = None) -> SiteProfile:
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}: one of {', '.join(SOURCES)}")
    url = (base_url or DEFAULT_URLS[source]).rstrip("/")
    return SiteProfile(source, url, _FACILITY[source], _NAMES[source])
