"""Integration fixtures: a real single-node Kafka, started by scripts/kafka.sh when none is running.

A broker the tests start is stopped when the last pytest session using it ends (each session holds a
lease file in the run dir, so concurrent sessions in one checkout do not pull the broker from under each
other). A broker started by hand (`bash scripts/kafka.sh start`) is never stopped by the tests.
"""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from kafka import KafkaAdminClient

from services.kafka_security import ADMIN, kafka_python_auth
from services.settings import get_settings
from services.topics_admin import wait_for_broker

REPO_ROOT = Path(__file__).resolve().parents[2]
KAFKA_SH = REPO_ROOT / "scripts" / "kafka.sh"
AUTOSTART_MARKER = "autostarted-by-tests"  # kafka.sh removes it on stop and on a fresh start


def _run_dir() -> Path:
    run_dir = Path(get_settings().kafka_run_dir)
    return run_dir if run_dir.is_absolute() else REPO_ROOT / run_dir


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


@contextmanager
def _sessions_lock(run_dir: Path) -> Iterator[None]:
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "pytest-sessions.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead; this container's pid 1 may take its time reaping
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _other_live_sessions(lease_dir: Path) -> list[int]:
    live = []
    for lease in lease_dir.glob("*"):
        if not lease.name.isdigit() or int(lease.name) == os.getpid():
            continue
        if _pid_alive(int(lease.name)):
            live.append(int(lease.name))
        else:
            lease.unlink(missing_ok=True)
    return live


def _stop_if_last(run_dir: Path, lease: Path) -> None:
    with _sessions_lock(run_dir):
        lease.unlink(missing_ok=True)
        others = _other_live_sessions(lease.parent)
        if not (run_dir / AUTOSTART_MARKER).exists():
            return
        if others:
            print(f"leaving the test-started broker running for pytest sessions {others}")
            return
        result = _kafka_sh("stop", timeout_s=60)
        print(f"scripts/kafka.sh stop (exit {result.returncode}):\n{result.stdout}{result.stderr}")
        (run_dir / AUTOSTART_MARKER).unlink(missing_ok=True)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of a live broker, started with scripts/kafka.sh if none answers.

    Never skips: if the broker cannot be started the fixture fails with the script output and log tail.
    """
    settings = get_settings()
    bootstrap = settings.bootstrap_servers
    run_dir = _run_dir()
    lease = run_dir / "pytest-sessions" / str(os.getpid())
    with _sessions_lock(run_dir):
        if not _port_open(settings.kafka_host, settings.kafka_port):
            # The script enforces its own start timeout; this outer bound also covers a first fetch.
            try:
                result = _kafka_sh("start", timeout_s=settings.kafka_start_timeout_s + 600)
            except subprocess.TimeoutExpired as exc:
                pytest.fail(f"scripts/kafka.sh start hung: {exc}", pytrace=False)
            if result.returncode != 0:
                pytest.fail(
                    f"scripts/kafka.sh start failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}",
                    pytrace=False,
                )
            print(f"scripts/kafka.sh start:\n{result.stdout}{result.stderr}")
            if "already running" not in result.stdout:
                (run_dir / AUTOSTART_MARKER).write_text(f"{os.getpid()}\n")
        lease.parent.mkdir(exist_ok=True)
        lease.touch()
    try:
        wait_for_broker(bootstrap, timeout_s=settings.kafka_start_timeout_s)
    except TimeoutError as exc:
        logs = _kafka_sh("logs", "40", timeout_s=30)
        _stop_if_last(run_dir, lease)
        pytest.fail(f"{exc}\n{logs.stdout}{logs.stderr}", pytrace=False)
    yield bootstrap
    _stop_if_last(run_dir, lease)


@pytest.fixture
def unique_topic_name() -> Callable[[str], str]:
    """Returns a maker of topic names unique to this test, e.g. 'it.<hex>.custody.events'."""
    run = uuid.uuid4().hex[:10]
    return lambda base: f"it.{run}.{base}"


@pytest.fixture
def fresh_topics(kafka_bootstrap: str) -> Iterator[list[str]]:
    """A list a test appends topic names to; each listed topic that exists is deleted at teardown."""
    names: list[str] = []
    yield names
    if not names:
        return
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="stockledger-tests", **kafka_python_auth(ADMIN))
    try:
        existing = set(admin.list_topics())
        doomed = [n for n in names if n in existing]
        if doomed:
            admin.delete_topics(doomed, raise_errors=False)
    finally:
        admin.close()


REGISTRY_SH = REPO_ROOT / "scripts" / "registry.sh"


@pytest.fixture(scope="session")
def schema_registry_url() -> Iterator[str]:
    """The Confluent API of a live schema registry holding the catalog (registered as `topics create` does).

    STOCKLEDGER_REGISTRY_URL if set (make test: scripts/with-kafka.sh started the local one), else the local
    registry of scripts/registry.sh, started here if it does not answer and stopped at the end. Never skips.
    """
    from schemas.registry import register_catalog

    settings = get_settings()
    url = settings.registry_url or settings.local_registry_url
    started = False
    if not settings.registry_url and not _port_open(settings.registry_host, settings.registry_port):
        result = subprocess.run(["bash", str(REGISTRY_SH), "start"], cwd=REPO_ROOT, capture_output=True, text=True,
                                timeout=settings.registry_start_timeout_s + 600, check=False)
        if result.returncode != 0:
            pytest.fail(f"scripts/registry.sh start failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}",
                        pytrace=False)
        started = True
    try:
        report = register_catalog(url)
        assert report.ok, report.summary()
        yield url
    finally:
        if started:
            subprocess.run(["bash", str(REGISTRY_SH), "stop"], cwd=REPO_ROOT, capture_output=True, text=True,
                           timeout=120, check=False)
