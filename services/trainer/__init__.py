"""Trainer service: trains the generator and exports it to Triton (issue #7)."""
