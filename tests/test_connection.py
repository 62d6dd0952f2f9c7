"""Reaching Temporal through the SDK's environment configuration: TOML profiles, environment
overrides, API keys and TLS, resolved by the real SDK and, where these machines allow, used for
real. The dev server serves no TLS, so the TLS test puts a TLS front (tests/tls_proxy.py) before it."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from temporalio.service import TLSConfig

from perdure.scripted.server import ScriptedLLMServer, ScriptedReply
from perdure.settings import Settings
from worker import TemporalConfigError, temporal_connect_config
from starter.temporal import connect
from tests.helpers import PERDURE, REPO
from tests.tls_proxy import Certificates, TLSProxy, make_certificates

PROFILES = """
[profile.default]
address = "default.example:7233"

[profile.cloud]
address = "perdure.abc12.tmprl.cloud:7233"
namespace = "perdure.abc12"
api_key = "secret-key-from-the-file"

[profile.mtls]
address = "temporal.internal:7233"
namespace = "agents"
[profile.mtls.tls]
server_name = "temporal.internal"
server_ca_cert_path = "{ca}"
client_cert_path = "{cert}"
client_key_path = "{key}"
"""


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def profiles(tmp_path: Path, certificates: Certificates) -> Path:
    path = tmp_path / "temporal.toml"
    path.write_text(PROFILES.format(ca=certificates.ca, cert=certificates.client_cert, key=certificates.client_key))
    return path


def resolved(environ: dict[str, str], settings: Settings | None = None) -> dict[str, object]:
    """The connect arguments, for settings read from `environ` as a process would read them."""
    chosen = settings or Settings.model_validate(
        {
            **Settings.from_env().model_dump(),
            "temporal_address": environ.get("TEMPORAL_ADDRESS", "localhost:7233"),
            "temporal_namespace": environ.get("TEMPORAL_NAMESPACE", "default"),
        }
    )
    return dict(temporal_connect_config(chosen, environ))


def test_without_configuration_the_local_default_is_used(tmp_path: Path) -> None:
    config = resolved({"HOME": str(tmp_path)})
    assert config == {"target_host": "localhost:7233", "namespace": "default"}


def test_the_default_profile_of_the_file_applies(profiles: Path) -> None:
    config = resolved({"TEMPORAL_CONFIG_FILE": str(profiles)})
    assert config == {"target_host": "default.example:7233", "namespace": "default"}


def test_a_profile_with_an_api_key_turns_tls_on(profiles: Path) -> None:
    config = resolved({"TEMPORAL_CONFIG_FILE": str(profiles), "TEMPORAL_PROFILE": "cloud"})
    assert config == {
        "target_host": "perdure.abc12.tmprl.cloud:7233",
        "namespace": "perdure.abc12",
        "api_key": "secret-key-from-the-file",
        "tls": True,
    }


def test_environment_variables_override_the_profile(profiles: Path) -> None:
    environ = {
        "TEMPORAL_CONFIG_FILE": str(profiles),
        "TEMPORAL_PROFILE": "cloud",
        "TEMPORAL_ADDRESS": "other.tmprl.cloud:7233",
        "TEMPORAL_NAMESPACE": "other.abc12",
        "TEMPORAL_API_KEY": "secret-key-from-the-environment",
        "TEMPORAL_GRPC_META_X_TEAM": "agents",
    }
    config = resolved(environ)
    assert config["target_host"] == "other.tmprl.cloud:7233" and config["namespace"] == "other.abc12"
    assert config["api_key"] == "secret-key-from-the-environment" and config["tls"] is True
    assert config["rpc_metadata"] == {"x-team": "agents"}


def test_a_tls_profile_reads_the_certificates(profiles: Path, certificates: Certificates) -> None:
    config = resolved({"TEMPORAL_CONFIG_FILE": str(profiles), "TEMPORAL_PROFILE": "mtls"})
    assert config["target_host"] == "temporal.internal:7233" and config["namespace"] == "agents"
    assert config["tls"] == TLSConfig(
        domain="temporal.internal",
        server_root_ca_cert=certificates.ca.read_bytes(),
        client_cert=certificates.client_cert.read_bytes(),
        client_private_key=certificates.client_key.read_bytes(),
    )


def test_an_address_set_by_code_wins_over_the_profile(profiles: Path) -> None:
    own_server = Settings.from_env().model_copy(
        update={"temporal_address": "127.0.0.1:7999", "temporal_namespace": "default"}
    )
    config = resolved({"TEMPORAL_CONFIG_FILE": str(profiles), "TEMPORAL_PROFILE": "mtls"}, own_server)
    assert config["target_host"] == "127.0.0.1:7999" and config["namespace"] == "agents"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"TEMPORAL_PROFILE": "nope"}, "cannot use the Temporal connection settings: Profile 'nope' not found"),
        (
            {
                "TEMPORAL_TLS_CLIENT_CERT_PATH": "/nonexistent/cert.pem",
                "TEMPORAL_TLS_CLIENT_KEY_PATH": "/nonexistent/key.pem",
            },
            "cannot use the Temporal connection settings: [Errno 2] No such file or directory: '/nonexistent/cert.pem'",
        ),
        (
            {"TEMPORAL_CONFIG_FILE": "/nonexistent/temporal.toml"},
            "TEMPORAL_CONFIG_FILE names /nonexistent/temporal.toml, which is not a file",
        ),
    ],
    ids=["unknown-profile", "missing-certificate", "missing-file"],
)
def test_unusable_settings_are_one_clear_error(environ: dict[str, str], message: str, profiles: Path) -> None:
    environ = {"TEMPORAL_CONFIG_FILE": str(profiles), **environ}
    with pytest.raises(TemporalConfigError) as raised:
        resolved(environ)
    assert str(raised.value) == message


def test_a_malformed_profile_file_is_one_clear_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[profile.default\n")
    with pytest.raises(TemporalConfigError, match=r"^cannot use the Temporal connection settings: .*TOML parse error"):
        resolved({"TEMPORAL_CONFIG_FILE": str(broken)})


async def perdure(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI without blocking the event loop the test worker runs on."""
    process = await asyncio.create_subprocess_exec(
        str(PERDURE), *args, cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return subprocess.CompletedProcess(args, process.returncode, stdout.decode(), stderr.decode())


def profile_env(cli_env: dict[str, str], tmp_path: Path, profile: str) -> dict[str, str]:
    """The CLI's environment with Temporal reached through a profile file, not TEMPORAL_ADDRESS."""
    path = tmp_path / "perdure-temporal.toml"
    path.write_text(profile)
    env = {k: v for k, v in cli_env.items() if not k.startswith("TEMPORAL_")}
    return {**env, "TEMPORAL_CONFIG_FILE": str(path), "TEMPORAL_PROFILE": "perdure"}


async def send_through(env: dict[str, str], llm: ScriptedLLMServer, model_name: str) -> dict[str, Any]:
    created = await perdure(
        env,
        "agent",
        "create",
        "--json",
        "--name",
        "profiled",
        "--model",
        f"scripted/{model_name}",
        "--endpoint",
        llm.base_url,
    )
    assert created.returncode == 0, created.stderr
    llm.script(model_name, [ScriptedReply(content="reached through the profile")])
    sent = await perdure(env, "send", json.loads(created.stdout)["id"], "hello", "--json")
    assert sent.returncode == 0, sent.stderr
    return json.loads(sent.stdout)


@pytest.mark.usefixtures("worker")
async def test_the_cli_runs_an_agent_through_a_profile(
    cli_env: dict[str, str], temporal_address: str, tmp_path: Path, llm: ScriptedLLMServer, model_name: str
) -> None:
    env = profile_env(cli_env, tmp_path, f'[profile.perdure]\naddress = "{temporal_address}"\nnamespace = "default"\n')
    response = await send_through(env, llm, model_name)
    assert response["stop_reason"]["stop_reason"] == "end_turn"


@pytest.mark.usefixtures("worker")
async def test_the_cli_runs_an_agent_over_mutual_tls(
    cli_env: dict[str, str],
    temporal_address: str,
    tmp_path: Path,
    llm: ScriptedLLMServer,
    model_name: str,
    certificates: Certificates,
) -> None:
    with TLSProxy(certificates, temporal_address) as proxy:
        profile = (
            f'[profile.perdure]\naddress = "{proxy.address}"\nnamespace = "default"\n[profile.perdure.tls]\n'
            f'server_ca_cert_path = "{certificates.ca}"\nclient_cert_path = "{certificates.client_cert}"\n'
            f'client_key_path = "{certificates.client_key}"\n'
        )
        env = profile_env(cli_env, tmp_path, profile)
        response = await send_through(env, llm, model_name)
        assert response["stop_reason"]["stop_reason"] == "end_turn"

        server_only = (
            f'[profile.perdure]\naddress = "{proxy.address}"\n'
            f'[profile.perdure.tls]\nserver_ca_cert_path = "{certificates.ca}"\n'
        )
        refused = await perdure(profile_env(cli_env, tmp_path, server_only), "status", "agent-x")
        assert refused.returncode == 1, "the server requires a client certificate"
        assert refused.stderr.startswith(f"perdure: error: cannot reach Temporal at {proxy.address} ("), refused.stderr


async def test_the_cli_reports_a_bad_profile_in_one_line(cli_env: dict[str, str], tmp_path: Path) -> None:
    env = {**profile_env(cli_env, tmp_path, '[profile.other]\naddress = "x:1"\n')}
    failed = await perdure(env, "status", "agent-x")
    assert failed.returncode == 2
    assert failed.stderr.strip().splitlines() == [
        "perdure: error: cannot use the Temporal connection settings: Profile 'perdure' not found"
    ]


async def test_the_python_client_connects_through_the_environment(
    temporal_address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEMPORAL_ADDRESS", temporal_address)
    client = await connect(Settings.from_env())
    assert client.service_client.config.target_host == temporal_address
    assert (await client.count_workflows()).count >= 0
