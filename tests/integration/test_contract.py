"""One step, two transports: the DuckDB file `replay --duckdb` writes equals the one the projector writes from Kafka."""

from __future__ import annotations

import subprocess
import sys

import duckdb
import pytest
from typer.testing import CliRunner

from services.archive import read_archive, write_archive
from services.cli import app
from services.producer import produce_rows
from services.projection_schema import column_names
from services.projector import Projector
from services.stream_status import committed_fold_offset, read_sequenced
from tests.integration.streams_harness import REPO_ROOT, fresh_stream_env, make_archive, stop, wait_caught_up

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

# Every projected table but the signed heads (a replay signs nothing), keyed as their rows are identified.
TABLES = {
    "posting_batches": ("event_id",), "postings": ("event_id", "leg"), "request_outcomes": ("event_id",),
    "liquidations": ("event_id",), "rejections": ("event_id",), "series_marks": ("event_id",),
    "log_entries": ("leaf_index",),
}
# Where a row was read from on Kafka: a replay has no output partitions or offsets (its offset column is the
# entry's leaf index, its partition NULL). Everything else, times included, must be equal.
TRANSPORT = {"partition", "offset"}


def rows_of(db, table: str) -> dict[tuple, dict]:
    cols = [c for c in column_names(table) if c not in TRANSPORT]
    con = duckdb.connect(str(db), read_only=True)
    try:
        quoted = ", ".join(f'"{c}"' for c in cols)
        out = {}
        for row in con.execute(f"SELECT {quoted} FROM {table}").fetchall():
            rec = dict(zip(cols, row, strict=True))
            key = tuple(rec[k] for k in TABLES[table])
            assert key not in out, (table, key)
            out[key] = rec
        return out
    finally:
        con.close()


def test_replay_duckdb_equals_the_projected_duckdb_row_for_row(kafka_bootstrap, tmp_path):
    env = fresh_stream_env(kafka_bootstrap, tmp_path)
    rows = list(read_archive(make_archive(tmp_path, accounts=80, events=2_500, seed=17)))
    worker = subprocess.Popen([sys.executable, "-m", "services.cli", "worker", "--idle-ms", "200"], cwd=REPO_ROOT,
                              env=env.env() | {"STOCKLEDGER_LOG_KEY_FILE": str(tmp_path / "k.key")},
                              stdout=open(tmp_path / "worker.log", "w"), stderr=subprocess.STDOUT)  # noqa: SIM115
    try:
        produce_rows(kafka_bootstrap, rows)
        wait_caught_up(env, len(rows), workers=[worker])
    finally:
        stop(worker)
    until = committed_fold_offset(kafka_bootstrap, env.app_id)
    projected = tmp_path / "projected.duckdb"
    projector = Projector(projected, bootstrap=kafka_bootstrap, group_id=f"{env.app_id}-projector")
    try:
        projector.catch_up(timeout_s=120)
    finally:
        projector.close()
    exported = tmp_path / "log.avro"
    write_archive(exported, read_sequenced(kafka_bootstrap, until), "contract")
    replayed = tmp_path / "replayed.duckdb"
    res = CliRunner().invoke(app, ["replay", str(exported), "--quiet", "--duckdb", str(replayed)])
    assert res.exit_code == 0, res.output
    for table in TABLES:
        live, offline = rows_of(projected, table), rows_of(replayed, table)
        if table not in ("liquidations", "rejections"):
            assert live, f"{table} is empty: the scenario should fill it"
        missing, extra = live.keys() - offline.keys(), offline.keys() - live.keys()
        assert not missing and not extra, (table, sorted(missing)[:3], sorted(extra)[:3])
        differing = [(k, {c: (live[k][c], offline[k][c]) for c in live[k] if live[k][c] != offline[k][c]})
                     for k in live if live[k] != offline[k]]
        assert not differing, (table, differing[:3])
