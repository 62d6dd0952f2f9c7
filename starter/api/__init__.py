"""Perdure's Letta-compatible HTTP API: what the official `letta-client` calls, served by a
Temporal client that reads the store (like the CLI), holding no run state of its own."""

from starter.api.app import create_app

__all__ = ["create_app"]
