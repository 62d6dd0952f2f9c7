"""MCP servers the tests run as real processes, written with the official `mcp` SDK."""
