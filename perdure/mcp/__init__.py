"""MCP servers: attaching their tools to agents, and talking to them with the official `mcp` SDK."""
