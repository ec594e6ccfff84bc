"""Inference gateway: renders any field of the sky through Triton (issue #8)."""
