"""Pydantic models at every boundary: stored rows, workflow payloads, client-facing messages."""
