"""Curator service: pair verdicts, blacklist, versioned datasets (issue #6)."""
