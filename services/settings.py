"""One settings object for every process, read from STOCKLEDGER_* environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Runtime configuration; every field can be set as STOCKLEDGER_<FIELD> in the environment."""

    model_config = SettingsConfigDict(env_prefix="STOCKLEDGER_", extra="ignore")

    kafka_host: str = "127.0.0.1"
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    kafka_version: str = "3.9.1"
    # Outside the clone so CI's fresh clones reuse the fetched jars (Maven's ~/.m2 caches too).
    kafka_home: Path = Path.home() / ".cache" / "stockledger" / "kafka"
    # Broker data, logs and pid file; per-clone so two checkouts never share a broker's storage.
    kafka_run_dir: Path = Path("var") / "kafka"
    kafka_heap_mib: int = 512
    kafka_start_timeout_s: int = 90
    # sasl_ssl: SCRAM-SHA-512 over TLS with ACLs (docs/SECURITY.md). plaintext: no authentication and no
    # authorization at all, for development only; scripts/kafka.sh reads the same variable.
    kafka_security: Literal["sasl_ssl", "plaintext"] = "sasl_ssl"
    # The local CA and broker certificate scripts/kafka.sh makes; outside the clone, shared by clones.
    kafka_tls_dir: Path = Path.home() / ".cache" / "stockledger" / "tls"
    # principal=password lines, mode 0600, written by scripts/kafka.sh; default <kafka_run_dir>/credentials.properties.
    kafka_credentials_file: Path | None = None
    # JSON object principal -> password; wins over the file (e.g. a container given one secret).
    kafka_passwords: dict[str, SecretStr] = {}
    # Act as this one principal for every connection instead of each role's own (tests, custom deployments).
    kafka_principal: str | None = None

    # Schema registry (scripts/registry.sh runs Apicurio Registry here; its build is cached outside the clone).
    registry_host: str = "127.0.0.1"
    registry_port: int = 8081
    registry_home: Path = Path.home() / ".cache" / "stockledger" / "registry"
    registry_run_dir: Path = Path("var") / "registry"  # H2 data, log, pid file
    registry_heap_mib: int = 384
    registry_start_timeout_s: int = 90
    # Confluent-compatible API the codec takes schema ids from and `topics create` registers into; empty: the
    # catalog's built-in ids (embedded mode). scripts/with-kafka.sh (make test/demo/bench) sets it to the local one.
    registry_url: str = ""

    topic_partitions: int = 6
    app_id: str = "stockledger"
    duckdb_path: Path = Path("var") / "stockledger.duckdb"
    # The Merkle log's signed checkpoints (docs/AUDITOR.md): origin line, signing key file (made at first
    # use, mode 0600; its verifier key is written next to it as .pub), and how often the fold signs a head.
    # Entries per ledger.sequenced record (SequencedBatch), 1..10,000: larger batches cost the transport less.
    sequencer_batch_max_records: int = Field(default=500, ge=1, le=10_000)

    # Fold snapshots (streams/snapshots.py): every N entries or T ms with new entries (0 turns either off),
    # and when the fold goes idle with new entries if the last one is at least `snapshot_idle_every_ms` old
    # (0: never; idle time is free, and it leaves the next recovery a short tail). The newest
    # `snapshot_keep` stay on ledger.snapshots. Recovery loads the newest that verifies.
    snapshot_every_records: int = Field(default=200_000, ge=0)
    snapshot_every_ms: int = Field(default=300_000, ge=0)
    snapshot_idle_every_ms: int = Field(default=60_000, ge=0, le=86_400_000)
    snapshot_keep: int = Field(default=2, ge=1, le=100)

    # The Faust worker (streams/app.py): its web views (status, one account, the pools) on this host and port
    # (several workers on one host: give each its own port), its data directory, and how often it publishes
    # the changed rows of its tables (ledger.collateral, ledger.pools). The fold takes up to
    # `fold_take_max_records` sequenced records per run, waiting at most `fold_take_within_ms` for more.
    worker_web_host: str = "127.0.0.1"
    worker_web_port: int = Field(default=6066, ge=1, le=65_535)
    worker_data_dir: Path = Path("var") / "faust"
    table_publish_every_ms: int = Field(default=1_000, ge=0, le=3_600_000)
    # The state hash in ledger.checkpoints while the fold is busy (always when it goes idle).
    checkpoint_hash_every_ms: int = Field(default=30_000, ge=100, le=3_600_000)
    # The state hash and snapshots are computed in forked children (copy-on-write: the fold goes on
    # meanwhile); false: in the fold's own loop, which stops for them.
    fold_work_in_child: bool = True
    fold_take_max_records: int = Field(default=20, ge=1, le=1_000)
    fold_take_within_ms: int = Field(default=20, ge=1, le=10_000)
    # The worker runs full (generation-2) garbage collections itself (streams/gc_policy.py): when the fold is
    # quiet, and at the latest this long after the last one (cycles freed later than that take memory meanwhile).
    gc_full_backstop_ms: int = Field(default=300_000, ge=1_000, le=3_600_000)

    log_origin: str = "stockledger.local/ledger"
    log_key_file: Path = Path("var") / "keys" / "log-signer.key"
    log_checkpoint_every_records: int = 10_000
    log_checkpoint_every_ms: int = 5_000

    api_host: str = "127.0.0.1"
    api_port: int = 8080
    # Bearer tokens of the HTTP API (hashed, mode 0600), made by `stockledger token create`.
    api_tokens_file: Path = Path("var") / "api-tokens.json"
    # /snapshot and /export: requests per token per minute, and the largest answer either may produce.
    api_heavy_requests_per_minute: int = 6
    api_export_max_rows: int = 10_000_000
    api_snapshot_max_bytes: int = 4 << 30

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.kafka_host}:{self.kafka_port}"

    @property
    def credentials_file(self) -> Path:
        return self.kafka_credentials_file or self.kafka_run_dir / "credentials.properties"

    @property
    def kafka_ca_file(self) -> Path:
        return self.kafka_tls_dir / "ca.pem"

    @property
    def local_registry_url(self) -> str:
        """The Confluent API of the registry scripts/registry.sh runs (registry_host:registry_port)."""
        return f"http://{self.registry_host}:{self.registry_port}/apis/ccompat/v6"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
