"""LLM providers: plain httpx clients with no retries of their own (Temporal owns retries)."""
