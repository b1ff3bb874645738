"""Client security settings from settings: the credentials file, env passwords, the principal override."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.topics import INPUT_TOPICS, TOPICS
from services.kafka_security import (
    AUDITOR,
    GRANTS,
    LEDGER,
    ORACLE,
    PRINCIPALS,
    SUPER_USERS,
    CredentialsError,
    aiokafka_auth,
    kafka_python_auth,
    librdkafka_auth,
    password_for,
    read_credentials_file,
    write_credentials_file,
    writer_of,
)
from services.settings import Settings


def _settings(tmp_path: Path, **overrides) -> Settings:
    (tmp_path / "tls").mkdir(exist_ok=True)
    (tmp_path / "tls" / "ca.pem").write_text("not read by these tests\n")
    return Settings(kafka_tls_dir=tmp_path / "tls", kafka_credentials_file=tmp_path / "creds.properties", **overrides)


def test_credentials_file_is_written_0600_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "creds.properties"
    write_credentials_file(path, {"ledger": "s3cret=with=equals", "auditor": "a"})
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_credentials_file(path) == {"ledger": "s3cret=with=equals", "auditor": "a"}


def test_a_credentials_file_others_can_read_is_refused_without_showing_a_password(tmp_path: Path) -> None:
    path = tmp_path / "creds.properties"
    write_credentials_file(path, {"ledger": "hunter2-very-secret"})
    path.chmod(0o644)
    with pytest.raises(CredentialsError, match="chmod 600") as err:
        read_credentials_file(path)
    assert "hunter2" not in str(err.value)


def test_kafka_python_settings_of_a_principal(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    write_credentials_file(settings.credentials_file, {LEDGER: "pw-ledger"})
    auth = kafka_python_auth(LEDGER, settings)
    assert auth == {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": LEDGER,
                    "sasl_plain_password": "pw-ledger", "ssl_cafile": str(tmp_path / "tls" / "ca.pem"),
                    "ssl_check_hostname": True}


def test_librdkafka_settings_of_a_principal(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    write_credentials_file(settings.credentials_file, {ORACLE: "pw-oracle"})
    auth = librdkafka_auth(ORACLE, settings)
    assert auth == {"security.protocol": "SASL_SSL", "sasl.mechanisms": "SCRAM-SHA-512", "sasl.username": ORACLE,
                    "sasl.password": "pw-oracle", "ssl.ca.location": str(tmp_path / "tls" / "ca.pem"),
                    "ssl.endpoint.identification.algorithm": "https"}
    assert librdkafka_auth(ORACLE, _settings(tmp_path, kafka_security="plaintext")) == {"security.protocol": "PLAINTEXT"}


def test_env_passwords_win_over_the_file_and_the_override_picks_the_principal(tmp_path: Path) -> None:
    settings = _settings(tmp_path, kafka_passwords={AUDITOR: "from-env"}, kafka_principal=AUDITOR)
    write_credentials_file(settings.credentials_file, {AUDITOR: "from-file", LEDGER: "pw-ledger"})
    assert password_for(AUDITOR, settings) == "from-env"
    auth = kafka_python_auth(LEDGER, settings)  # the job asks for ledger, the setting says auditor
    assert (auth["sasl_plain_username"], auth["sasl_plain_password"]) == (AUDITOR, "from-env")
    assert writer_of("custody.events", settings) == AUDITOR


def test_a_missing_password_names_the_principal_and_where_it_looked(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    with pytest.raises(CredentialsError, match="'oracle'.*creds.properties"):
        kafka_python_auth("oracle", settings)


def test_a_missing_ca_is_a_clear_error(tmp_path: Path) -> None:
    settings = Settings(kafka_tls_dir=tmp_path / "nowhere", kafka_passwords={LEDGER: "x"})
    with pytest.raises(CredentialsError, match="CA certificate"):
        aiokafka_auth(LEDGER, settings)


def test_plaintext_mode_sends_no_credentials(tmp_path: Path) -> None:
    settings = _settings(tmp_path, kafka_security="plaintext")
    assert kafka_python_auth(LEDGER, settings) == {"security_protocol": "PLAINTEXT"}
    assert aiokafka_auth(LEDGER, settings) == {"security_protocol": "PLAINTEXT"}


def test_each_input_topic_has_exactly_one_writer_and_unknown_topics_none(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    writers = {topic: writer_of(topic, settings) for topic in INPUT_TOPICS}
    for topic, writer in writers.items():
        granted = [g.name for g in GRANTS if g.principal == writer and "WRITE" in g.operations]
        assert topic in granted
        others = [g.principal for g in GRANTS if g.name == topic and "WRITE" in g.operations]
        assert others == [writer], topic
    with pytest.raises(CredentialsError):
        writer_of("ledger.postings", settings)


def test_the_auditor_is_granted_no_write_and_super_users_no_grants() -> None:
    assert all("WRITE" not in g.operations for g in GRANTS if g.principal == AUDITOR)
    assert not [g for g in GRANTS if g.principal in SUPER_USERS]
    assert {g.principal for g in GRANTS} | set(SUPER_USERS) == set(PRINCIPALS)
    declared = {t.name for t in TOPICS}
    assert {g.name for g in GRANTS if g.resource == "topic"} <= declared | {"*"}
