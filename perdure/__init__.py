"""Perdure's shared library: schemas, store, providers, tools and settings.

Nothing here imports Temporal, so the same code serves the worker, the CLI and tests.
"""
