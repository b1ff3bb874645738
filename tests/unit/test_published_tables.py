"""The Faust worker's published tables: every changed account is published, rows encode, chart names parse."""

from __future__ import annotations

import pytest

from schemas.codec import decode, encode
from services.archive import ArchiveRow
from services.ports import PortInUse, check_port_free, free_port
from services.scenario import ScenarioConfig, generate
from streams.step import Entry, Ledger
from streams.tables import _accounts_in, account_row, pool_row, touched


def _rows() -> list[ArchiveRow]:
    return list(generate(ScenarioConfig(accounts=40, events=1_500, seed=23)))


def _snapshot(ledger: Ledger) -> dict[str, dict]:
    rows = {a: account_row(acct, 0, 0) for a, acct in ledger.state.accounts.items()}
    for row in rows.values():
        row.pop("event_id")
    return rows


def test_every_account_whose_balances_changed_is_marked_touched():
    """Against a slow reference: after each step, diff every account's row with the one before."""
    ledger = Ledger()
    before = _snapshot(ledger)
    changed_steps = 0
    for n, (topic, key, value) in enumerate(_rows()):
        marked: set[str] = set()
        result = ledger.step(Entry(topic, key, value, 0, n, None), with_outputs=False)
        applied = touched(ledger.state, result, marked)
        after = _snapshot(ledger)
        changed = {a for a in after if before.get(a) != after[a]}
        assert changed <= marked, f"entry {n} ({result.subject}) changed {sorted(changed - marked)} unmarked"
        assert applied == (result.outcome.rejection is None and not result.outcome.duplicate)
        changed_steps += bool(changed)
        before = after
    assert changed_steps > 100  # the scenario moved balances often enough to mean something


@pytest.mark.parametrize(("name", "accounts", "expected"), [
    ("user:alice:margin:AAPL", {"alice"}, ["alice"]),
    ("user:alice:wallet:AAPL", {"alice"}, ["alice"]),
    ("user:alice:lp", {"alice"}, ["alice"]),
    ("user:a:margin:b:margin:X", {"a", "a:margin:b"}, ["a", "a:margin:b"]),  # ids may hold ':' themselves
    ("user:bob:margin:AAPL", {"alice"}, []),
    ("pool:main:USD", {"pool"}, []),
    ("custodian:AAPL", {"custodian"}, []),
])
def test_chart_names_map_to_their_accounts(name, accounts, expected):
    assert sorted(_accounts_in(name, dict.fromkeys(accounts))) == sorted(expected)


def test_rows_encode_as_their_subjects_and_round_trip():
    ledger = Ledger()
    for n, (topic, key, value) in enumerate(_rows()):
        ledger.step(Entry(topic, key, value, 0, n, None), with_outputs=False)
    state = ledger.state
    acct = max(state.accounts.values(), key=lambda a: len(a.positions))
    row = account_row(acct, 1_234, ledger.clock_us)
    assert decode(encode("AccountCollateral", row)) == ("AccountCollateral", row)
    assert row["positions_nano"] and all(v != 0 for v in row["positions_nano"].values())
    pool = pool_row(state, 1_234, ledger.clock_us)
    assert decode(encode("PoolState", pool)) == ("PoolState", pool)
    assert pool["shares_nano"] == state.pool.shares_nano > 0
    assert pool["share_value_micro_usd"] == pool["nav_micro_usd"] * 1_000_000_000 // pool["shares_nano"]


def test_a_busy_port_is_one_line_naming_the_setting():
    import socket

    port = free_port()
    check_port_free("127.0.0.1", port)  # free: no error
    with socket.socket() as held:
        held.bind(("127.0.0.1", port))
        held.listen()
        with pytest.raises(PortInUse, match=f"127.0.0.1:{port} is in use.*--web-port or STOCKLEDGER_WORKER_WEB_PORT"):
            check_port_free("127.0.0.1", port)
