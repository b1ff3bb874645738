"""Integration fixtures: a real single-node Kafka, started by scripts/kafka.sh when none is running."""

from __future__ import annotations

import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kafka import KafkaAdminClient

from services.settings import get_settings
from services.topics_admin import wait_for_broker

REPO_ROOT = Path(__file__).resolve().parents[2]
KAFKA_SH = REPO_ROOT / "scripts" / "kafka.sh"


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _kafka_sh(*args: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(KAFKA_SH), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of a live broker; starts one (and stops it afterwards) only if none answers.

    Never skips: if the broker cannot be started the fixture fails with the script output and log tail.
    """
    settings = get_settings()
    bootstrap = settings.bootstrap_servers
    started_here = False
    if not _port_open(settings.kafka_host, settings.kafka_port):
        # Generous outer bound: the script enforces its own start timeout; a first fetch downloads ~46 MB.
        try:
            result = _kafka_sh("start", timeout_s=settings.kafka_start_timeout_s + 600)
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"scripts/kafka.sh start hung: {exc}", pytrace=False)
        if result.returncode != 0:
            pytest.fail(
                f"scripts/kafka.sh start failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}",
                pytrace=False,
            )
        started_here = "already running" not in result.stdout
    try:
        wait_for_broker(bootstrap, timeout_s=settings.kafka_start_timeout_s)
    except TimeoutError as exc:
        logs = _kafka_sh("logs", "40", timeout_s=30)
        if started_here:
            _kafka_sh("stop", timeout_s=60)
        pytest.fail(f"{exc}\n{logs.stdout}{logs.stderr}", pytrace=False)
    yield bootstrap
    if started_here:
        result = _kafka_sh("stop", timeout_s=60)
        if result.returncode != 0:
            print(f"scripts/kafka.sh stop failed:\n{result.stdout}\n{result.stderr}")


@pytest.fixture
def unique_topic_name() -> Callable[[str], str]:
    """Returns a maker of topic names unique to this run, e.g. 'it.<hex>.custody.events'."""
    run = uuid.uuid4().hex[:10]
    return lambda base: f"it.{run}.{base}"


@pytest.fixture
def fresh_topics(kafka_bootstrap: str) -> Iterator[list[str]]:
    """A list a test appends topic names to; each listed topic that exists is deleted at teardown."""
    names: list[str] = []
    yield names
    if not names:
        return
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="stockledger-tests")
    try:
        existing = set(admin.list_topics())
        doomed = [n for n in names if n in existing]
        if doomed:
            admin.delete_topics(doomed, raise_errors=False)
    finally:
        admin.close()
