"""Which server a model handle goes to: the provider table.

A handle's prefix (`anthropic/claude-sonnet-4-5`) or Letta's `model_endpoint_type` names the
provider; the table says which wire protocol it speaks, where it answers by default and which
environment variables of the worker override the address and hold the key. Keys are read at
request time, in the worker only, so they never travel in a workflow or activity payload.
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel

Api = Literal["openai", "anthropic"]
LOCAL_PROVIDER = "local"
SCRIPTED_PROVIDER = "scripted"


class ProviderSpec(BaseModel):
    name: str
    api: Api
    """`openai`: chat completions (`/chat/completions`); `anthropic`: the Messages API."""
    default_base_url: str | None = None
    base_url_env: str | None = None
    api_key_env: str | None = None

    def base_url_from_env(self) -> str | None:
        """The address the worker's environment gives, else the provider's usual one."""
        return (os.environ.get(self.base_url_env) if self.base_url_env else None) or self.default_base_url

    def api_key(self) -> str | None:
        return (os.environ.get(self.api_key_env) if self.api_key_env else None) or None


def _compatible(name: str, default_base_url: str | None, *, key: bool = True) -> ProviderSpec:
    """An OpenAI-compatible server: `NAME_BASE_URL`, and `NAME_API_KEY` when it takes a key."""
    prefix = name.upper()
    return ProviderSpec(
        name=name,
        api="openai",
        default_base_url=default_base_url,
        base_url_env=f"{prefix}_BASE_URL",
        api_key_env=f"{prefix}_API_KEY" if key else None,
    )


PROVIDERS: dict[str, ProviderSpec] = {
    spec.name: spec
    for spec in (
        _compatible("openai", "https://api.openai.com/v1"),
        ProviderSpec(
            name="anthropic",
            api="anthropic",
            default_base_url="https://api.anthropic.com",
            base_url_env="ANTHROPIC_BASE_URL",
            api_key_env="ANTHROPIC_API_KEY",
        ),
        _compatible("ollama", "http://localhost:11434/v1", key=False),
        _compatible("vllm", "http://localhost:8000/v1"),
        _compatible("lmstudio", "http://localhost:1234/v1", key=False),
        _compatible("llamacpp", "http://localhost:8080/v1", key=False),
        _compatible("openrouter", "https://openrouter.ai/api/v1"),
        _compatible("together", "https://api.together.xyz/v1"),
        _compatible("groq", "https://api.groq.com/openai/v1"),
        _compatible("deepseek", "https://api.deepseek.com/v1"),
        _compatible("xai", "https://api.x.ai/v1"),
        _compatible("mistral", "https://api.mistral.ai/v1"),
        # Their addresses come from the worker's settings (the bundled model, the test stand-in).
        ProviderSpec(name=LOCAL_PROVIDER, api="openai"),
        ProviderSpec(name=SCRIPTED_PROVIDER, api="openai"),
    )
}
ALIASES: dict[str, str] = {
    "lmstudio_openai": "lmstudio",
    "lmstudio-chatcompletions": "lmstudio",
    "together_ai": "together",
}
"""Letta's other spellings of the same providers."""


def provider_spec(name: str) -> ProviderSpec | None:
    """The provider a handle prefix or `model_endpoint_type` names, or None if unknown."""
    key = name.strip().lower()
    return PROVIDERS.get(ALIASES.get(key, key))


def known_providers() -> list[str]:
    return sorted(PROVIDERS)
