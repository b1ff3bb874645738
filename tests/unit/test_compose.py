"""docker-compose.yml cannot run here; check its shape and that every command is a real stockledger command."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from services.cli import app

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_kafka_service_is_official_image_in_kraft_mode():
    kafka = _compose()["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:3.9")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"


def _init_script() -> str:
    return (ROOT / "scripts" / "compose-kafka-init.sh").read_text()


def test_compose_broker_has_the_same_security_as_kafka_sh():
    services = _compose()["services"]
    assert services["kafka-init"]["image"] == services["kafka"]["image"]
    assert services["kafka"]["command"][-1] == "/secrets/server.properties"
    script = _init_script()
    for line in ("process.roles=broker,controller", "listeners=SASL_SSL://:9092,CONTROLLER://:9093",
                 "listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:SSL", "sasl.enabled.mechanisms=SCRAM-SHA-512",
                 "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                 "allow.everyone.if.no.acl.found=false", "listener.name.controller.ssl.client.auth=required",
                 "super.users=User:admin;User:broker;User:CN=stockledger-broker"):
        assert f"\n{line}\n" in script, line
    assert "--add-scram" in script
    assert "PLAINTEXT" not in script


def test_compose_init_makes_a_password_for_every_principal():
    from services.kafka_security import PRINCIPALS

    declared = next(line for line in _init_script().splitlines() if line.startswith("PRINCIPALS="))
    assert declared.split("=", 1)[1].strip('"').split() == list(PRINCIPALS)


def test_every_stockledger_service_logs_in_over_sasl_ssl():
    services = _compose()["services"]
    for name, service in services.items():
        if service.get("build") is None:
            continue
        env = service["environment"]
        assert env["STOCKLEDGER_KAFKA_SECURITY"] == "sasl_ssl", name
        assert env["STOCKLEDGER_KAFKA_CREDENTIALS_FILE"].startswith("/secrets/"), name
        assert "secrets:/secrets:ro" in service["volumes"], name
    assert "stockledger acls apply" in services["topics"]["command"][2]
    published = [p for s in services.values() for p in s.get("ports", [])]
    assert published and all(p.startswith("127.0.0.1:") for p in published)


def _stockledger_commands(command: list[str]) -> list[list[str]]:
    """The stockledger invocations of a service: the command itself, or each one inside `sh -c`."""
    if command[:2] == ["sh", "-c"]:
        return [part.split() for part in command[2].split("&&")]
    return [command]


def test_every_command_is_a_real_stockledger_command():
    runner = CliRunner()
    # Services built from this repo run stockledger; the Kafka image's services run the broker's own tools.
    commands = [c for s in _compose()["services"].values() if "command" in s and "build" in s
                for c in _stockledger_commands(s["command"])]
    assert commands, "compose runs no stockledger command"
    for command in commands:
        assert command[0] == "stockledger", command
        words = [w for w in command[1:] if not w.startswith("-") and not w.startswith("/")]
        # Walk the sub-commands (options and their values are left to --help parsing below).
        path = []
        for w in words:
            probe = runner.invoke(app, [*path, w, "--help"])
            if probe.exit_code != 0:
                break
            path.append(w)
        assert path, f"{command} names no stockledger command"
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, result.output
        options = [w for w in command[1:] if w.startswith("--")]
        for option in options:
            assert option in result.output, f"{option} is not an option of stockledger {' '.join(path)}"


def test_unknown_command_would_be_caught():
    runner = CliRunner()
    assert runner.invoke(app, ["no-such-command", "--help"]).exit_code != 0


def test_compose_runs_the_worker_and_the_api():
    services = _compose()["services"]
    assert services["worker"]["command"] == ["stockledger", "worker"]
    assert services["api"]["command"][:2] == ["stockledger", "serve"]


def test_every_stockledger_service_uses_the_registry_service():
    services = _compose()["services"]
    assert services["registry"]["image"].startswith("apicurio/apicurio-registry")
    users = [s for s in services.values() if s.get("build")]
    assert users and all(s["environment"]["STOCKLEDGER_REGISTRY_URL"].startswith("http://registry:") for s in users)
