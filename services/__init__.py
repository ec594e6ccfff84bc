"""Prettier Space Survey services: one folder per service plus the shared runtime."""
