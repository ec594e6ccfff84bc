"""Crawler service: mirrors the ESA/Hubble and ESA/Webb archives (issue #4)."""
