"""Principals and ACLs on the real broker: each does what GRANTS allows and is refused everything else.

Writes go to the declared topics themselves (the ACLs name them); the stream and demo tests empty those
topics before they use them, so the few records left here change no other test.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from pathlib import Path

import kafka.errors as Errors
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaConnectionError
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import (
    ACL,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    NewTopic,
    ResourcePattern,
    ResourceType,
)

from schemas import codec
from schemas.samples import sample_records
from schemas.topics import (
    CUSTODY_EVENTS,
    INPUT_TOPICS,
    LEDGER_CHECKPOINTS,
    LEDGER_POSTINGS,
    PROJECTED_TOPICS,
    TOPICS,
)
from services.kafka_acls import admin_client, apply_acls
from services.kafka_security import (
    ADMIN,
    AUDITOR,
    INPUT_WRITERS,
    LEDGER,
    ORACLE,
    PROJECTOR,
    VENUE,
    aiokafka_auth,
    kafka_python_auth,
    read_credentials_file,
)
from services.settings import get_settings
from services.topics_admin import ensure_topics

pytestmark = pytest.mark.integration
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bootstrap(kafka_bootstrap: str) -> str:
    if get_settings().kafka_security != "sasl_ssl":
        pytest.fail("these tests need the SASL_SSL broker (STOCKLEDGER_KAFKA_SECURITY=sasl_ssl, the default)")
    assert ensure_topics(kafka_bootstrap).ok
    return kafka_bootstrap


def _send(bootstrap: str, principal: str, topic: str, value: bytes = b"acl-test", idempotent: bool = False) -> int:
    """One record as the principal; the offset it landed at, or the broker's error raised."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", max_block_ms=15_000,
                             enable_idempotence=idempotent, **kafka_python_auth(principal))
    try:
        return producer.send(topic, key=b"acl-test", value=value, partition=0).get(timeout=30).offset
    finally:
        producer.close(timeout=10)


def _end_offset(bootstrap: str, principal: str, topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, **kafka_python_auth(principal))
    try:
        tp = TopicPartition(topic, 0)
        return consumer.end_offsets([tp])[tp]
    finally:
        consumer.close()


def _read_partition0(bootstrap: str, principal: str, topic: str) -> list[bytes]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **kafka_python_auth(principal))
    try:
        tp = TopicPartition(topic, 0)
        end = consumer.end_offsets([tp])[tp]
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        values: list[bytes] = []
        deadline = time.monotonic() + 30
        while consumer.position(tp) < end and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                values += [r.value for r in records]
        return values
    finally:
        consumer.close()


def _custody_deposit() -> bytes:
    subject, record = next((s, r) for _, _, s, r in sample_records(40, seed=3) if s == "CustodyMovement")
    return codec.encode(subject, record)


def test_venue_cannot_forge_a_custody_deposit(bootstrap: str) -> None:
    before = _end_offset(bootstrap, AUDITOR, CUSTODY_EVENTS)
    with pytest.raises(Errors.TopicAuthorizationFailedError):
        _send(bootstrap, VENUE, CUSTODY_EVENTS, _custody_deposit())
    with pytest.raises(Errors.TopicAuthorizationFailedError):  # the idempotent producer the project uses
        _send(bootstrap, VENUE, CUSTODY_EVENTS, _custody_deposit(), idempotent=True)
    assert _end_offset(bootstrap, AUDITOR, CUSTODY_EVENTS) == before
    # ...while the custodian's own deposit is taken.
    assert _send(bootstrap, INPUT_WRITERS[CUSTODY_EVENTS], CUSTODY_EVENTS, _custody_deposit(), idempotent=True) >= before
    assert _end_offset(bootstrap, AUDITOR, CUSTODY_EVENTS) == before + 1


@pytest.mark.parametrize("topic", INPUT_TOPICS)
def test_each_input_has_one_writer(bootstrap: str, topic: str) -> None:
    writer = INPUT_WRITERS[topic]
    before = _end_offset(bootstrap, AUDITOR, topic)
    assert _send(bootstrap, writer, topic) == before
    others = sorted({p for p in INPUT_WRITERS.values() if p != writer} | {LEDGER, PROJECTOR, AUDITOR})
    for principal in others:
        with pytest.raises(Errors.TopicAuthorizationFailedError):
            _send(bootstrap, principal, topic)
    assert _end_offset(bootstrap, AUDITOR, topic) == before + 1


def test_oracle_cannot_read_the_postings_and_the_auditor_can(bootstrap: str) -> None:
    marker = f"posting-{time.time_ns()}".encode()
    _send(bootstrap, LEDGER, LEDGER_POSTINGS, marker, idempotent=True)
    with pytest.raises(Errors.TopicAuthorizationFailedError):
        _end_offset(bootstrap, ORACLE, LEDGER_POSTINGS)
    with pytest.raises(Errors.TopicAuthorizationFailedError):
        _read_partition0(bootstrap, ORACLE, LEDGER_POSTINGS)
    assert marker in _read_partition0(bootstrap, AUDITOR, LEDGER_POSTINGS)
    assert marker in _read_partition0(bootstrap, PROJECTOR, LEDGER_POSTINGS)


def test_the_auditor_writes_nothing(bootstrap: str) -> None:
    for spec in TOPICS:
        with pytest.raises(Errors.TopicAuthorizationFailedError):
            _send(bootstrap, AUDITOR, spec.name)
    # Nowhere to write, so not even a producer id: the idempotent producer is refused at the cluster.
    with pytest.raises(Errors.KafkaError, match="ClusterAuthorizationFailed"):
        _send(bootstrap, AUDITOR, LEDGER_POSTINGS, idempotent=True)
    auditor_admin = KafkaAdminClient(bootstrap_servers=bootstrap, **kafka_python_auth(AUDITOR))
    try:
        with pytest.raises(Errors.TopicAuthorizationFailedError):
            auditor_admin.create_topics([NewTopic("auditor.made.this", 1, 1)])
    finally:
        auditor_admin.close()


def test_the_projector_reads_what_it_projects_only(bootstrap: str) -> None:
    for topic in PROJECTED_TOPICS:  # the outputs and the sequenced log (the Merkle log's entries)
        _end_offset(bootstrap, PROJECTOR, topic)  # allowed: no error
        with pytest.raises(Errors.TopicAuthorizationFailedError):
            _send(bootstrap, PROJECTOR, topic)
    for topic in (*INPUT_TOPICS, LEDGER_CHECKPOINTS):
        with pytest.raises(Errors.TopicAuthorizationFailedError):
            _end_offset(bootstrap, PROJECTOR, topic)


def test_the_ledger_reads_inputs_and_cannot_forge_them(bootstrap: str) -> None:
    for topic in INPUT_TOPICS:
        _end_offset(bootstrap, LEDGER, topic)
        with pytest.raises(Errors.TopicAuthorizationFailedError):
            _send(bootstrap, LEDGER, topic)


def _raw_connect_closed(port: int) -> bool:
    """A client speaking plain Kafka (an ApiVersions request) to the TLS listener gets no Kafka answer."""
    request = bytes.fromhex("00000013" "0012" "0000" "00000001" "0009" "706c61696e74657874")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        try:
            answer = sock.recv(64)
        except (ConnectionResetError, TimeoutError):
            return True
    return not answer.startswith(b"\x00\x00")


def test_unauthenticated_clients_are_refused(bootstrap: str) -> None:
    assert _raw_connect_closed(get_settings().kafka_port)
    with pytest.raises(Errors.KafkaError):
        KafkaAdminClient(bootstrap_servers=bootstrap, bootstrap_timeout_ms=4_000, request_timeout_ms=4_000).list_topics()
    # TLS with the right CA but no SASL login: still nothing.
    with pytest.raises(Errors.KafkaError):
        KafkaAdminClient(bootstrap_servers=bootstrap, bootstrap_timeout_ms=4_000, request_timeout_ms=4_000,
                         security_protocol="SSL", ssl_cafile=str(get_settings().kafka_ca_file)).list_topics()


def test_a_wrong_password_is_refused(bootstrap: str, caplog: pytest.LogCaptureFixture) -> None:
    async def topics(auth: dict) -> int:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=5_000, **auth)
        try:
            await consumer.start()
            return len(await consumer.topics())
        finally:
            await consumer.stop()

    assert asyncio.run(topics(aiokafka_auth(AUDITOR))) >= len(TOPICS)  # the right password works
    caplog.set_level(logging.ERROR, logger="aiokafka")
    with pytest.raises(KafkaConnectionError):
        asyncio.run(topics(aiokafka_auth(AUDITOR) | {"sasl_plain_password": "not-the-password"}))
    assert "invalid credentials with SASL mechanism SCRAM-SHA-512" in caplog.text
    with pytest.raises(Errors.KafkaError):
        KafkaAdminClient(bootstrap_servers=bootstrap, bootstrap_timeout_ms=4_000, request_timeout_ms=4_000,
                         **(kafka_python_auth(ADMIN) | {"sasl_plain_password": "not-the-password"})).list_topics()


def _wait_until(predicate, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.3)
    return False


def _venue_can_write_custody(bootstrap: str) -> bool:
    try:
        _send(bootstrap, VENUE, CUSTODY_EVENTS)
        return True
    except Errors.TopicAuthorizationFailedError:
        return False


def test_acls_apply_removes_a_grant_nobody_declared(bootstrap: str) -> None:
    stray = ACL(principal=f"User:{VENUE}", host="*", operation=ACLOperation.WRITE,
                permission_type=ACLPermissionType.ALLOW,
                resource_pattern=ResourcePattern(ResourceType.TOPIC, CUSTODY_EVENTS, ACLResourcePatternType.LITERAL))
    try:
        with admin_client(bootstrap) as admin:
            assert not admin.create_acls([stray])["failed"]
        assert _wait_until(lambda: _venue_can_write_custody(bootstrap)), "the stray grant never took effect"
        report = apply_acls(bootstrap)
        assert report.deleted == 1 and report.created == 0
        assert _wait_until(lambda: not _venue_can_write_custody(bootstrap)), "the stray grant survived acls apply"
    finally:
        apply_acls(bootstrap)


def test_no_password_reaches_the_broker_logs(bootstrap: str) -> None:
    settings = get_settings()
    run_dir = settings.kafka_run_dir if settings.kafka_run_dir.is_absolute() else REPO_ROOT / settings.kafka_run_dir
    passwords = list(read_credentials_file(settings.credentials_file).values())
    assert len(passwords) >= 9
    logs = [p for p in (run_dir / "logs").glob("*.log*") if p.is_file()]
    assert any(p.name.startswith("server.log") for p in logs)
    for log_file in logs:
        text = log_file.read_text(errors="replace")
        leaked = [p for p in passwords if p in text]
        assert not leaked, f"{len(leaked)} password(s) in {log_file}"
    assert settings.credentials_file.stat().st_mode & 0o077 == 0


def test_rotating_a_password_refuses_the_old_one(bootstrap: str) -> None:
    from services.kafka_acls import rotate_password

    settings = get_settings()
    old = read_credentials_file(settings.credentials_file)[ORACLE]
    rotate_password(bootstrap, ORACLE, settings)
    new = read_credentials_file(settings.credentials_file)[ORACLE]
    assert new != old and settings.credentials_file.stat().st_mode & 0o077 == 0

    def can_log_in(password: str) -> bool:
        try:
            _log_in(bootstrap, kafka_python_auth(ORACLE) | {"sasl_plain_password": password})
            return True
        except Errors.KafkaError:
            return False

    assert _wait_until(lambda: can_log_in(new) and not can_log_in(old)), "the rotation did not take effect"
    assert _send(bootstrap, ORACLE, "price.events") >= 0  # the oracle's clients, re-reading the file, still write


def _log_in(bootstrap: str, auth: dict) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, bootstrap_timeout_ms=4_000, request_timeout_ms=4_000, **auth)
    try:
        admin.list_topics()
    finally:
        admin.close()
