"""Where and how to reach Temporal, resolved the same way by the worker, the CLI and the client.

The SDK's environment configuration decides: the profile named by `TEMPORAL_PROFILE` (else
"default") in the TOML file `TEMPORAL_CONFIG_FILE` (else ~/.config/temporalio/temporal.toml),
with `TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`, `TEMPORAL_API_KEY`, `TEMPORAL_TLS*` and
`TEMPORAL_GRPC_META_*` over it. An API key turns TLS on. So a worker reaches a local dev
server, a self-hosted cluster with mutual TLS or Temporal Cloud with nothing but its
environment, and the API key and client key never leave it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from temporalio.envconfig import ClientConfigProfile, ClientConnectConfig

from perdure.settings import DEFAULT_TEMPORAL_ADDRESS, DEFAULT_TEMPORAL_NAMESPACE, Settings


CONFIG_FILE_ENV = "TEMPORAL_CONFIG_FILE"


class TemporalConfigError(ValueError):
    """Connection settings that cannot be used (a bad profile file, a missing certificate): bad
    input the user fixes, so the CLI says it in one line and exits 2."""


def temporal_connect_config(settings: Settings, environ: Mapping[str, str] | None = None) -> ClientConnectConfig:
    """`Client.connect` keyword arguments from the profile and the environment (`environ`, else
    this process's). An address or namespace that code set on `settings` (the embedded dev
    server, a test's own server) wins; left at their defaults, the profile's apply."""
    named = (os.environ if environ is None else environ).get(CONFIG_FILE_ENV)
    if named and not Path(named).is_file():
        raise TemporalConfigError(f"{CONFIG_FILE_ENV} names {named}, which is not a file")
    try:
        profile = ClientConfigProfile.load(override_env_vars=environ)
        config = profile.to_client_connect_config()
    except (RuntimeError, OSError) as err:  # the SDK's ConfigError is a RuntimeError
        reason = str(err).strip().splitlines()[0]
        raise TemporalConfigError(f"cannot use the Temporal connection settings: {reason}") from err
    config["target_host"] = _chosen(settings.temporal_address, DEFAULT_TEMPORAL_ADDRESS, profile.address)
    config["namespace"] = _chosen(settings.temporal_namespace, DEFAULT_TEMPORAL_NAMESPACE, profile.namespace)
    return config


def _chosen(setting: str, default: str, from_profile: str | None) -> str:
    return setting if setting not in ("", default) else from_profile or default
