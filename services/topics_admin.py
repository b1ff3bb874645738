"""Create the declared Kafka topics (schemas/topics.py) and report drift from the declaration, via kafka-python."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import kafka.errors as Errors
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

from schemas.topics import TOPICS, TopicSpec
from services.kafka_security import ADMIN, kafka_python_auth

_TOPIC_ALREADY_EXISTS = Errors.TopicAlreadyExistsError.errno


@dataclass(frozen=True)
class BrokerInfo:
    """What the cluster said when it answered a metadata request."""

    cluster_id: str | None
    controller_id: int
    broker_ids: tuple[int, ...]


@dataclass(frozen=True)
class TopicDescription:
    """A topic as the broker sees it; configs holds every effective value, defaults included."""

    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str]


@dataclass(frozen=True)
class ConfigDrift:
    key: str
    expected: str
    actual: str | None  # None: the broker does not report this config at all


@dataclass(frozen=True)
class TopicDrift:
    """How an existing topic differs from its spec."""

    name: str
    expected_partitions: int
    actual_partitions: int
    configs: tuple[ConfigDrift, ...] = ()

    @property
    def partitions_differ(self) -> bool:
        return self.expected_partitions != self.actual_partitions

    def __str__(self) -> str:
        parts = []
        if self.partitions_differ:
            parts.append(f"partitions {self.actual_partitions} (declared {self.expected_partitions})")
        parts += [f"{c.key}={c.actual} (declared {c.expected})" for c in self.configs]
        return f"{self.name}: " + ", ".join(parts)


@dataclass(frozen=True)
class EnsureReport:
    """Outcome of ensure_topics: created now, already matching, or drifted (never altered)."""

    created: tuple[str, ...]
    unchanged: tuple[str, ...]
    drift: tuple[TopicDrift, ...]

    @property
    def ok(self) -> bool:
        return not self.drift

    def drift_for(self, name: str) -> TopicDrift | None:
        return next((d for d in self.drift if d.name == name), None)

    def summary(self) -> str:
        lines = [
            f"created: {', '.join(self.created) or '-'}",
            f"unchanged: {', '.join(self.unchanged) or '-'}",
        ]
        lines += [f"DRIFT {d}" for d in self.drift]
        return "\n".join(lines)


@contextmanager
def _admin(bootstrap: str, timeout_s: float = 30.0) -> Iterator[KafkaAdminClient]:
    timeout_ms = int(timeout_s * 1000)
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="stockledger-topics-admin",
        bootstrap_timeout_ms=timeout_ms,
        request_timeout_ms=timeout_ms,
        **kafka_python_auth(ADMIN),  # creating, deleting and describing every topic is the admin's job
    )
    try:
        yield admin
    finally:
        admin.close()


def wait_for_broker(bootstrap: str, timeout_s: float = 90.0) -> BrokerInfo:
    """Poll until the broker answers a metadata request; raise TimeoutError with the last error otherwise."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"Kafka at {bootstrap} did not answer within {timeout_s:g}s: {last_error!r}")
        try:
            with _admin(bootstrap, timeout_s=max(1.0, min(5.0, remaining))) as admin:
                cluster = admin.describe_cluster()
                return BrokerInfo(
                    cluster_id=cluster.get("cluster_id"),
                    controller_id=cluster.get("controller_id", -1),
                    broker_ids=tuple(sorted(b["broker_id"] for b in cluster["brokers"])),
                )
        except Exception as exc:  # any failure means "not yet": retry until the deadline
            last_error = exc
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))


def _describe(admin: KafkaAdminClient, names: Sequence[str]) -> dict[str, TopicDescription]:
    """Describe the named topics that exist; missing ones are simply absent from the result."""
    if not names:
        return {}
    metadata = [t for t in admin.describe_topics(list(names)) if t["error_code"] == 0]
    if not metadata:
        return {}
    resources = [ConfigResource(ConfigResourceType.TOPIC, t["name"]) for t in metadata]
    configs = admin.describe_configs(resources, config_filter="all").get("topic", {})
    result = {}
    for t in metadata:
        partitions = t["partitions"]
        result[t["name"]] = TopicDescription(
            name=t["name"],
            partitions=len(partitions),
            replication_factor=max((len(p["replica_nodes"]) for p in partitions), default=0),
            configs={
                k: v["value"] for k, v in configs.get(t["name"], {}).items() if v.get("value") is not None
            },
        )
    return result


def describe_topics(bootstrap: str, names: Iterable[str] | None = None) -> list[TopicDescription]:
    """Describe the named topics (all non-internal topics if names is None); names that do not exist are skipped."""
    with _admin(bootstrap) as admin:
        if names is None:
            wanted = sorted(t["name"] for t in admin.describe_topics() if not t.get("is_internal"))
        else:
            wanted = list(names)
        found = _describe(admin, wanted)
    return [found[n] for n in wanted if n in found]


def _same_value(expected: str, actual: str | None) -> bool:
    if actual is None:
        return False
    if "," in expected or "," in actual:  # list configs such as cleanup.policy=compact,delete
        return sorted(v.strip() for v in expected.split(",")) == sorted(v.strip() for v in actual.split(","))
    return expected.strip() == actual.strip()


def topic_drift(spec: TopicSpec, actual: TopicDescription) -> TopicDrift | None:
    """Compare one topic with its spec: partition count and every declared config; None if they match."""
    configs = tuple(
        ConfigDrift(key, expected, actual.configs.get(key))
        for key, expected in sorted(spec.configs.items())
        if not _same_value(expected, actual.configs.get(key))
    )
    if actual.partitions == spec.partitions and not configs:
        return None
    return TopicDrift(spec.name, spec.partitions, actual.partitions, configs)


def ensure_topics(
    bootstrap: str,
    specs: Sequence[TopicSpec] = TOPICS,
    *,
    replication_factor: int = -1,
    timeout_s: float = 30.0,
) -> EnsureReport:
    """Create missing topics as declared and check existing ones; drift is reported, never altered.

    replication_factor -1 lets the broker apply its default.replication.factor.
    """
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate topic names in specs: {names}")
    created: list[str] = []
    with _admin(bootstrap, timeout_s) as admin:
        existing = set(admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        if missing:
            response = admin.create_topics(
                {
                    s.name: {
                        "num_partitions": s.partitions,
                        "replication_factor": replication_factor,
                        "configs": dict(s.configs),
                    }
                    for s in missing
                },
                timeout_ms=int(timeout_s * 1000),
                raise_errors=False,
            )
            errors = []
            for result in response["topics"]:
                code = result["error_code"]
                if code == 0:
                    created.append(result["name"])
                elif code != _TOPIC_ALREADY_EXISTS:  # lost a race with another creator: verify it below
                    error = Errors.for_code(code)
                    errors.append(
                        f"{result['name']}: {error.__name__} {result.get('error_message') or ''}".strip()
                    )
            if errors:
                raise Errors.KafkaError("could not create topics: " + "; ".join(errors))
            admin.wait_for_topics(created, timeout_ms=int(timeout_s * 1000))
        described = _describe(admin, names)

    unchanged: list[str] = []
    drift: list[TopicDrift] = []
    for spec in specs:
        actual = described.get(spec.name)
        if actual is None:
            raise Errors.KafkaError(f"topic {spec.name} is missing from metadata after ensure_topics")
        d = topic_drift(spec, actual)
        if d is not None:
            drift.append(d)
        elif spec.name not in created:
            unchanged.append(spec.name)
    return EnsureReport(created=tuple(created), unchanged=tuple(unchanged), drift=tuple(drift))


def reset_topics(bootstrap: str, specs: Sequence[TopicSpec] = TOPICS, groups: Sequence[str] = (),
                 timeout_s: float = 60.0) -> EnsureReport:
    """Delete the declared topics and the given consumer groups, wait until gone, create them afresh.

    Destructive: for demos and tests on a local broker, never for a shared cluster.
    """
    names = [s.name for s in specs]
    deadline = time.monotonic() + timeout_s
    with _admin(bootstrap, timeout_s) as admin:
        existing = set(admin.list_topics())
        doomed = [n for n in names if n in existing]
        if doomed:
            admin.delete_topics(doomed)
        if groups:
            known = {g["group_id"] for g in admin.list_groups()}
            stale = [g for g in groups if g in known]
            if stale:
                admin.delete_groups(stale)
        while set(admin.list_topics()) & set(doomed):
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics still being deleted after {timeout_s:g}s: {sorted(set(admin.list_topics()) & set(doomed))}")
            time.sleep(0.2)
    while True:
        try:
            return ensure_topics(bootstrap, specs)
        except Exception:  # "marked for deletion" can linger a moment after the topic left the listing
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def reset_for_run(bootstrap: str, registry_url: str | None = None) -> EnsureReport:
    """reset_topics, then the catalog registered as `topics create` does (when a registry is configured).

    Benchmarks and tests start from here: a worker encodes through the registry and refuses a schema
    version it does not hold (a registry kept from before a schema was added).
    """
    from schemas.registry import register_catalog
    from services.settings import get_settings

    report = reset_topics(bootstrap)
    url = get_settings().registry_url if registry_url is None else registry_url
    if url:
        registered = register_catalog(url)
        if not registered.ok:
            raise RuntimeError(f"the schema registry disagrees with the catalog (a local one that drifted: "
                               f"`bash scripts/registry.sh reset`): {registered.summary()}")
    return report
