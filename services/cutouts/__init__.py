"""Cutout service: survey pixels matched to a footprint through hips2fits (issue #5)."""
