"""Kafka principals, what each may do, and the one place that builds a client's security settings.

Every Kafka client of the project (kafka-python, aiokafka and librdkafka via confluent-kafka) gets its
``security_protocol``, SASL and TLS settings from :func:`kafka_python_auth`, :func:`aiokafka_auth` or
:func:`librdkafka_auth`, for the principal of its job. The
grants here are applied to the broker by ``stockledger acls apply`` (scripts/kafka.sh runs it at every
start); docs/SECURITY.md explains them.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.topics import (
    CUSTODY_EVENTS,
    INPUT_TOPICS,
    LEDGER_CHECKPOINTS,
    LEDGER_COLLATERAL,
    LEDGER_OUTPUT_TOPICS,
    LEDGER_POOLS,
    LEDGER_SEQUENCED,
    LEDGER_SNAPSHOTS,
    MARGIN_EVENTS,
    MINT_EVENTS,
    PRICE_EVENTS,
    PROJECTED_TOPICS,
    TRADE_EVENTS,
)
from services.settings import Settings, get_settings

SASL_MECHANISM = "SCRAM-SHA-512"

ADMIN = "admin"  # operator tooling: topics, ACLs, credentials (a super user)
BROKER = "broker"  # the broker's own inter-broker login (a super user)
CUSTODIAN = "custodian"
ISSUER = "issuer"
ORACLE = "oracle"
VENUE = "venue"
LEDGER = "ledger"  # the stream workers: sequencer and fold
PROJECTOR = "projector"
AUDITOR = "auditor"
SUPER_USERS = (ADMIN, BROKER)
PRINCIPALS = (ADMIN, BROKER, CUSTODIAN, ISSUER, ORACLE, VENUE, LEDGER, PROJECTOR, AUDITOR)

# The one writer of each input topic: a record on custody.events is the custodian's word, and so on.
INPUT_WRITERS: dict[str, str] = {
    CUSTODY_EVENTS: CUSTODIAN,
    MINT_EVENTS: ISSUER,
    PRICE_EVENTS: ORACLE,
    MARGIN_EVENTS: VENUE,
    TRADE_EVENTS: VENUE,
}
assert set(INPUT_WRITERS) == set(INPUT_TOPICS)
OUTPUT_TOPICS = LEDGER_OUTPUT_TOPICS  # what the ledger writes (schemas.topics)
ANY_NAME = "*"  # Kafka's wildcard resource name: every topic, every group


@dataclass(frozen=True)
class Grant:
    """An ALLOW ACL: principal may do each operation on the named (literal) resource."""

    principal: str
    resource: str  # "topic" or "group"
    name: str
    operations: tuple[str, ...]


def _topics(principal: str, names: tuple[str, ...], *ops: str) -> list[Grant]:
    return [Grant(principal, "topic", n, ops) for n in names]


# Group names carry the app id (<app_id>.sequencer, <app_id>.fold, <app_id>-projector), which differs per
# deployment and per demo run, so groups are granted by wildcard: a group alone reads nothing, since
# joining it, fetching and committing offsets all also need READ on the topic.
GRANTS: tuple[Grant, ...] = (
    *[g for topic, writer in INPUT_WRITERS.items() for g in _topics(writer, (topic,), "WRITE", "DESCRIBE")],
    *_topics(LEDGER, INPUT_TOPICS, "READ", "DESCRIBE"),
    # The Faust tables' changelogs are read back too: by the worker recovering a table and by a standby.
    *_topics(LEDGER, (LEDGER_SEQUENCED, LEDGER_CHECKPOINTS, LEDGER_SNAPSHOTS, LEDGER_COLLATERAL, LEDGER_POOLS),
             "READ", "WRITE", "DESCRIBE"),
    *_topics(LEDGER, OUTPUT_TOPICS, "WRITE", "DESCRIBE"),
    Grant(LEDGER, "group", ANY_NAME, ("READ", "DESCRIBE")),
    # The projector stores the outputs and the sequenced log (the Merkle log's entries, for `log audit`).
    *_topics(PROJECTOR, PROJECTED_TOPICS, "READ", "DESCRIBE"),
    Grant(PROJECTOR, "group", ANY_NAME, ("READ", "DESCRIBE")),
    Grant(AUDITOR, "topic", ANY_NAME, ("READ", "DESCRIBE", "DESCRIBE_CONFIGS")),
    Grant(AUDITOR, "group", ANY_NAME, ("DESCRIBE",)),
)


class CredentialsError(RuntimeError):
    """A principal's password cannot be found, or the credentials file is unsafe. Never carries a password."""


def read_credentials_file(path: Path) -> dict[str, str]:
    """principal=password lines ('#' comments); refused unless only the owner can read it (like ssh keys)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return {}
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CredentialsError(f"{path} is readable by others (mode {stat.S_IMODE(mode):04o}); chmod 600 {path}")
    found: dict[str, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, password = line.partition("=")
        if not sep or not name.strip() or not password:
            raise CredentialsError(f"{path} line {n}: expected principal=password")
        found[name.strip()] = password
    return found


def password_for(principal: str, settings: Settings | None = None) -> str:
    """The principal's password from STOCKLEDGER_KAFKA_PASSWORDS, else the credentials file."""
    settings = settings or get_settings()
    if principal in settings.kafka_passwords:
        return settings.kafka_passwords[principal].get_secret_value()
    path = settings.credentials_file
    password = read_credentials_file(path).get(principal)
    if password is None:
        raise CredentialsError(
            f"no Kafka password for principal {principal!r}: not in STOCKLEDGER_KAFKA_PASSWORDS nor in {path} "
            "(scripts/kafka.sh writes that file at the broker's first start)")
    return password


def acting_principal(role_principal: str, settings: Settings | None = None) -> str:
    """The principal a client of this job logs in as: STOCKLEDGER_KAFKA_PRINCIPAL if set, else the job's own."""
    settings = settings or get_settings()
    return settings.kafka_principal or role_principal


def _check_ca(settings: Settings) -> str:
    ca = settings.kafka_ca_file
    if not ca.is_file():
        raise CredentialsError(f"CA certificate {ca} not found (scripts/kafka.sh makes it at the broker's first start)")
    return str(ca)


def _login(principal: str, settings: Settings) -> tuple[str, str, str] | None:
    """(user, password, CA file) of this principal's SASL_SSL login, or None in plaintext mode."""
    if settings.kafka_security == "plaintext":
        return None
    user = acting_principal(principal, settings)
    return user, password_for(user, settings), _check_ca(settings)


def kafka_python_auth(principal: str, settings: Settings | None = None) -> dict[str, Any]:
    """Keyword arguments for a kafka-python client (producer, consumer, admin) of this principal."""
    login = _login(principal, settings or get_settings())
    if login is None:
        return {"security_protocol": "PLAINTEXT"}
    user, password, ca = login
    return {"security_protocol": "SASL_SSL", "sasl_mechanism": SASL_MECHANISM, "sasl_plain_username": user,
            "sasl_plain_password": password, "ssl_cafile": ca, "ssl_check_hostname": True}


def aiokafka_auth(principal: str, settings: Settings | None = None) -> dict[str, Any]:
    """Keyword arguments for an aiokafka client (the stream worker's producer and consumers) of this principal."""
    login = _login(principal, settings or get_settings())
    if login is None:
        return {"security_protocol": "PLAINTEXT"}
    from aiokafka.helpers import create_ssl_context

    user, password, ca = login
    return {"security_protocol": "SASL_SSL", "sasl_mechanism": SASL_MECHANISM, "sasl_plain_username": user,
            "sasl_plain_password": password, "ssl_context": create_ssl_context(cafile=ca)}


def librdkafka_auth(principal: str, settings: Settings | None = None) -> dict[str, Any]:
    """Settings for a confluent-kafka (librdkafka) client of this principal: the bulk publisher."""
    login = _login(principal, settings or get_settings())
    if login is None:
        return {"security.protocol": "PLAINTEXT"}
    user, password, ca = login
    return {"security.protocol": "SASL_SSL", "sasl.mechanisms": SASL_MECHANISM, "sasl.username": user,
            "sasl.password": password, "ssl.ca.location": ca, "ssl.endpoint.identification.algorithm": "https"}


def writer_of(topic: str, settings: Settings | None = None) -> str:
    """The principal a producer of archive rows logs in as for this topic: its source, unless overridden."""
    settings = settings or get_settings()
    if settings.kafka_principal:
        return settings.kafka_principal
    try:
        return INPUT_WRITERS[topic]
    except KeyError:
        raise CredentialsError(f"no principal writes topic {topic!r}; set STOCKLEDGER_KAFKA_PRINCIPAL to choose one") from None


def write_credentials_file(path: Path, passwords: dict[str, str]) -> None:
    """Replace the credentials file atomically, created 0600 (the passwords never touch a wider file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write("# Kafka SCRAM passwords per principal (principal=password); keep mode 0600.\n")
        out.writelines(f"{name}={pw}\n" for name, pw in passwords.items())
    os.replace(tmp, path)
