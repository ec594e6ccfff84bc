"""The local universe: one deterministic sky, seen as a ground-based survey (DSS2,
SDSS9) and as Hubble/Webb outreach images, and replicas of the real sites that
serve it (ESA archives, CDS hips2fits, the Gaia TAP). Tests and the demo run the
production code against these replicas; production talks to the real sites."""
