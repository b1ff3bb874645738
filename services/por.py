"""Proof of reserves over a LedgerState as of a time (DESIGN.md section 7).

Pure functions: no I/O, no clock, no floats. The caller (``services/cli_por.py``, later a Kafka-backed
source) hands in a :class:`~ledger.state.LedgerState` and the as-of time in microseconds; where the
state comes from is not this module's business.

Per symbol (all quantities integers in nano-units):

* custodian aggregate   = sum of the AGGR of the latest MT535 statement of every safekeeping account
                          (nano-shares); without any statement the ledger's own ``shares_held_nano``
                          is used instead and the verdict says ``NO_STATEMENT``;
* shares held           = the ledger's book of the custodian (``custodian:<sym>``, nano-shares);
* supply x multiplier   = ceil(supply_nano x multiplier_at(as_of) / 1e9) (nano-shares; rounded up:
                          the reserve must cover every fraction of a share the tokens claim);
* liabilities           = sum over accounts of wallet + margin tokens, plus main-pool and insurance-pool
                          tokens (nano-tokens); must equal the ledger's supply;
* ratio                 = floor(custodian x 1e6 / (supply x multiplier)) in ppm (rounded down: the
                          conservative figure); ``None`` when nothing is owed;
* verdict               = NO_STATEMENT without a statement, else FULLY_RESERVED when
                          custodian >= supply x multiplier, else UNDER_RESERVED.

Liabilities are committed in a Merkle-sum tree (``ledger.merkle_sum``): one leaf per account with its
wallet + margin tokens per symbol in the snapshot's symbol order (sorted symbol names), and two pseudo
accounts ``pool:main`` and ``pool:insurance`` for the pools' tokens. Every component (wallet, margin,
pool, insurance) is checked non-negative *before* it is summed, so a negative balance can never be
netted away or committed. Salts come from ``derive_salt(secret, snapshot_id, account)``.

The snapshot id is ``por-<as-of ISO-8601 UTC>-<first 16 hex of the canonical state hash>``: the same
state at the same time always gives the same snapshot, hence the same salts and the same root.

Root sums are token quantities while the custodian holds shares. A verifier compares each root sum
with the tokens the custodian's shares cover, ``floor(aggregate x 1e9 / multiplier)`` (rounded down,
against the venue), which the root file publishes next to the aggregates and multipliers it is
computed from (see :func:`root_document` and :func:`verify_against_root`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ledger.limits import TIME_MAX_US, TIME_MIN_US
from ledger.merkle_sum import ProofError, Tree, VerifiedProof, build_tree, derive_salt, verify_proof
from ledger.state import LedgerState, ReserveState
from ledger.state_hash import state_hash
from ledger.units import NANO, PPM

POOL_MAIN = "pool:main"
POOL_INSURANCE = "pool:insurance"
PSEUDO_ACCOUNTS = (POOL_MAIN, POOL_INSURANCE)
SECRET_ENV = "STOCKLEDGER_POR_SECRET"
ROOT_KIND = "stockledger-por-root"
ROOT_VERSION = 2  # 2: the root names the Merkle log (size, root) of the history it was computed from
ROOT_VERSIONS_READ = (1, 2)

FULLY_RESERVED = "FULLY_RESERVED"
UNDER_RESERVED = "UNDER_RESERVED"
NO_STATEMENT = "NO_STATEMENT"

SOURCE_STATEMENTS = "statements"
SOURCE_LEDGER = "ledger"  # no statement: the ledger's own shares_held_nano stands in

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
_INT_RE = re.compile(r"-?[0-9]+")


class PorError(ValueError):
    """The proof of reserves cannot be computed or checked; the message says why."""


# --------------------------------------------------------------------------- times and display


def parse_time(text: str, *, naive_is_utc: bool = True) -> int:
    """ISO-8601 (``2026-03-07T12:00:00Z``, ``2026-03-07``) or integer microseconds -> microseconds.

    A time without an offset is taken as UTC when ``naive_is_utc`` (the CLI), refused otherwise
    (statement files must say their offset). Conversion is exact integer arithmetic.
    """
    text = text.strip()
    if len(text) > 64:
        raise ValueError(f"a time of {len(text):,} characters is not a time")
    if _INT_RE.fullmatch(text):
        return _in_window(int(text), text)
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither ISO-8601 nor integer microseconds") from None
    if dt.tzinfo is None:
        if not naive_is_utc:
            raise ValueError(f"{text!r} has no time zone; write Z or an offset such as +00:00")
        dt = dt.replace(tzinfo=UTC)
    return _in_window((dt - _EPOCH) // _ONE_US, text)


def _in_window(t_us: int, text: str) -> int:
    """Times outside the ledger's window (ledger.limits) are refused here, where a person can fix them."""
    if not TIME_MIN_US <= t_us < TIME_MAX_US:
        raise ValueError(f"{text!r} is outside the ledger's time window (2000-01-01 to 2100-01-01 UTC)")
    return t_us


def format_time(t_us: int) -> str:
    """Microseconds -> ISO-8601 UTC with ``Z`` (fraction only when non-zero)."""
    dt = _EPOCH + timedelta(microseconds=t_us)
    text = dt.strftime("%Y-%m-%dT%H:%M:%S")
    if dt.microsecond:
        text += f".{dt.microsecond:06d}"
    return text + "Z"


def format_nano(q: int | None) -> str:
    """Nano-units as an exact decimal with thousands separators: 12000000001 -> '12.000000001'."""
    if q is None:
        return "-"
    sign = "-" if q < 0 else ""
    whole, frac = divmod(abs(q), NANO)
    text = f"{sign}{whole:,}"
    if frac:
        text += "." + f"{frac:09d}".rstrip("0")
    return text


def format_ppm(ppm: int | None) -> str:
    """Ratio in ppm as a percentage with four decimals, integer arithmetic only."""
    if ppm is None:
        return "n/a"
    return f"{ppm // 10_000:,}.{ppm % 10_000:04d} %"


def format_duration(us: int) -> str:
    s = us // 1_000_000
    if s >= 86_400:
        return f"{s // 86_400} d {s % 86_400 // 3_600} h"
    if s >= 3_600:
        return f"{s // 3_600} h {s % 3_600 // 60} min"
    return f"{s // 60} min {s % 60} s"


# --------------------------------------------------------------------------- reserves per symbol


def shares_for_tokens_ceil(tokens_nano: int, multiplier_nano: int) -> int:
    """Shares the tokens claim, rounded up."""
    return -((-tokens_nano * multiplier_nano) // NANO)


def tokens_covered_floor(shares_nano: int, multiplier_nano: int) -> int:
    """Tokens that the shares back, rounded down."""
    return shares_nano * NANO // multiplier_nano


def custodian_aggregate(reserve: ReserveState) -> tuple[int, str, tuple[str, ...]]:
    """(aggregate nano-shares, source, safekeeping accounts counted)."""
    if not reserve.statements:
        return reserve.shares_held_nano, SOURCE_LEDGER, ()
    accounts = tuple(sorted(reserve.statements))
    return sum(reserve.statements[a].aggr_qty_nano for a in accounts), SOURCE_STATEMENTS, accounts


def liabilities_by_symbol(state: LedgerState) -> dict[str, int]:
    """Tokens owed per symbol: wallets + margin of every account + main pool + insurance pool."""
    out = dict.fromkeys(state.reserves, 0)
    for acct in state.accounts.values():
        for book in (acct.wallet_nano, acct.margin_nano):
            for sym, q in book.items():
                out[sym] = out.get(sym, 0) + q
    for book in (state.pool.tokens_nano, state.pool.insurance_tokens_nano):
        for sym, q in book.items():
            out[sym] = out.get(sym, 0) + q
    return out


@dataclass(frozen=True)
class SymbolReserve:
    """One row of the proof-of-reserves report (nano-shares unless the name says tokens)."""

    symbol: str
    isin: str
    custodian_aggregate_nano: int
    custodian_source: str  # SOURCE_STATEMENTS or SOURCE_LEDGER
    safekeeping_accounts: tuple[str, ...]
    oldest_statement_as_of_us: int | None
    shares_held_nano: int
    supply_tokens_nano: int
    multiplier_nano: int
    supply_shares_nano: int  # ceil(supply x multiplier)
    liabilities_tokens_nano: int
    ratio_ppm: int | None
    verdict: str

    @property
    def liabilities_match_supply(self) -> bool:
        return self.liabilities_tokens_nano == self.supply_tokens_nano

    @property
    def custodian_token_cover_nano(self) -> int:
        """Tokens the custodian aggregate backs: floor(aggregate x 1e9 / multiplier)."""
        return tokens_covered_floor(self.custodian_aggregate_nano, self.multiplier_nano)


def reserve_report(state: LedgerState, as_of_us: int) -> list[SymbolReserve]:
    """Custodian vs ledger vs supply x multiplier vs liabilities, per listed symbol, sorted by symbol."""
    liabilities = liabilities_by_symbol(state)
    unlisted = sorted(s for s, q in liabilities.items() if s not in state.reserves and q)
    if unlisted:
        raise PorError(f"balances held in unlisted symbol(s) {', '.join(unlisted)}: cannot attribute reserves")
    rows = []
    for sym in symbol_order(state):
        r = state.reserves[sym]
        aggregate, source, accounts = custodian_aggregate(r)
        mult = r.multiplier_at(as_of_us)
        needed = shares_for_tokens_ceil(r.supply_nano, mult)
        ratio = aggregate * PPM // needed if needed > 0 else None
        if source == SOURCE_LEDGER:
            verdict = NO_STATEMENT
        else:
            verdict = FULLY_RESERVED if aggregate >= needed else UNDER_RESERVED
        oldest = min((st.as_of_us for st in r.statements.values()), default=None)
        rows.append(SymbolReserve(sym, r.isin, aggregate, source, accounts, oldest, r.shares_held_nano, r.supply_nano,
                                  mult, needed, liabilities.get(sym, 0), ratio, verdict))
    return rows


def symbol_order(state: LedgerState) -> tuple[str, ...]:
    """The snapshot's fixed symbol order: listed symbols sorted by name."""
    return tuple(sorted(state.reserves))


# --------------------------------------------------------------------------- liabilities tree


def liability_balances(state: LedgerState, symbols: Sequence[str]) -> list[tuple[str, tuple[int, ...]]]:
    """(account, quantities in symbol order) for every account and the two pool pseudo-accounts.

    Refuses (PorError) a negative wallet, margin, pool or insurance balance, a balance in a symbol
    outside ``symbols``, and a user account whose id collides with a pool pseudo-account.
    """
    index = {s: i for i, s in enumerate(symbols)}
    out: list[tuple[str, tuple[int, ...]]] = []

    def vector(owner: str, books: Sequence[tuple[str, Mapping[str, int]]]) -> tuple[int, ...]:
        q = [0] * len(symbols)
        for book_name, book in books:
            for sym, v in book.items():
                if type(v) is not int:
                    raise PorError(f"{owner}: {book_name} balance of {sym} is not an integer: {v!r}")
                if v < 0:
                    raise PorError(
                        f"{owner}: negative {book_name} balance {v} of {sym}; negative balances are never committed"
                    )
                if sym not in index:
                    if v:
                        raise PorError(f"{owner}: {book_name} holds {v} of unlisted symbol {sym}")
                    continue
                q[index[sym]] += v
        return tuple(q)

    for account_id in sorted(state.accounts):
        if account_id in PSEUDO_ACCOUNTS:
            raise PorError(f"user account id {account_id!r} collides with a pool pseudo-account")
        acct = state.accounts[account_id]
        out.append((account_id, vector(f"account {account_id!r}", (("wallet", acct.wallet_nano), ("margin", acct.margin_nano)))))
    out.append((POOL_MAIN, vector(POOL_MAIN, (("pool", state.pool.tokens_nano),))))
    out.append((POOL_INSURANCE, vector(POOL_INSURANCE, (("insurance", state.pool.insurance_tokens_nano),))))
    return out


def snapshot_id_for(as_of_us: int, state_hash_hex: str) -> str:
    """Deterministic snapshot id from the as-of time and the canonical state hash."""
    return f"por-{format_time(as_of_us)}-{state_hash_hex[:16]}"


@dataclass
class Snapshot:
    """A committed proof-of-reserves snapshot: the report rows and the liabilities tree."""

    snapshot_id: str
    as_of_us: int
    state_hash: str
    symbols: tuple[str, ...]
    reserves: list[SymbolReserve]
    tree: Tree
    log_tree_size: int | None = None  # the Merkle log of the entries folded (docs/AUDITOR.md): the binding
    log_root_hash: str | None = None

    @property
    def root_hash(self) -> str:
        return self.tree.root()[0]

    @property
    def root_sums(self) -> dict[str, int]:
        return self.tree.root()[1]

    def proof(self, account_id: str) -> dict[str, Any]:
        return self.tree.proof(account_id)


def build_snapshot(state: LedgerState, as_of_us: int, secret: bytes, *, state_hash_hex: str | None = None,
                   log: tuple[int, str] | None = None) -> Snapshot:
    """Report + Merkle-sum tree over every account's liabilities; raises PorError on what cannot be committed.

    log: (tree size, root hex) of the Merkle log of the entries the state was folded from; the root file
    records it, so the snapshot is bound to one history (and a signed checkpoint of it).
    """
    if not state.reserves:
        raise PorError("no symbol is listed: nothing to prove")
    if len(secret) < 16:
        raise PorError("the proof-of-reserves secret must be at least 16 bytes (32 random bytes recommended)")
    reserves = reserve_report(state, as_of_us)
    symbols = symbol_order(state)
    shash = state_hash_hex or state_hash(state)
    snapshot_id = snapshot_id_for(as_of_us, shash)
    balances = liability_balances(state, symbols)
    try:
        tree = build_tree(snapshot_id, symbols, [(a, derive_salt(secret, snapshot_id, a), q) for a, q in balances])
    except ValueError as exc:
        raise PorError(str(exc)) from None
    sums = tree.root()[1]
    for row in reserves:  # the tree must commit exactly what the report states
        if sums[row.symbol] != row.liabilities_tokens_nano:
            raise PorError(f"tree root sum of {row.symbol} {sums[row.symbol]} differs from liabilities {row.liabilities_tokens_nano}")
    return Snapshot(snapshot_id, as_of_us, shash, symbols, reserves, tree,
                    log[0] if log else None, log[1] if log else None)


# --------------------------------------------------------------------------- the published root


def root_document(snap: Snapshot) -> dict[str, Any]:
    """The JSON document to publish: everything a verifier needs next to a user's proof."""
    rows = {r.symbol: r for r in snap.reserves}
    syms = list(snap.symbols)
    return {
        "kind": ROOT_KIND,
        "version": ROOT_VERSION,
        "snapshot_id": snap.snapshot_id,
        "as_of": format_time(snap.as_of_us),
        "as_of_us": snap.as_of_us,
        "state_hash": snap.state_hash,
        "symbols": syms,
        "isins": {s: rows[s].isin for s in syms},
        "root_hash": snap.root_hash,
        "root_sums": snap.root_sums,
        "accounts": len(snap.tree),
        "custodian_aggregates": {s: rows[s].custodian_aggregate_nano for s in syms},
        "custodian_sources": {s: rows[s].custodian_source for s in syms},
        "multipliers": {s: rows[s].multiplier_nano for s in syms},
        "custodian_token_cover": {s: rows[s].custodian_token_cover_nano for s in syms},
        "supply": {s: rows[s].supply_tokens_nano for s in syms},
        "supply_shares": {s: rows[s].supply_shares_nano for s in syms},
        "ratio_ppm": {s: rows[s].ratio_ppm for s in syms},
        "verdicts": {s: rows[s].verdict for s in syms},
        "log": None if snap.log_tree_size is None else {"tree_size": snap.log_tree_size, "root_hash": snap.log_root_hash},
        "units": (
            "integers in nano-units (1e-9): root_sums, supply and custodian_token_cover in tokens; "
            "custodian_aggregates and supply_shares in shares; multipliers in nano-shares per token; "
            "ratio_ppm in parts per million"
        ),
    }


def _int_map(doc: Mapping[str, Any], key: str, symbols: Sequence[str], *, positive: bool = False) -> dict[str, int]:
    value = doc.get(key)
    if not isinstance(value, Mapping):
        raise PorError(f"root file: {key!r} must be an object of symbol -> integer")
    out = {}
    for s in symbols:
        v = value.get(s)
        if type(v) is not int or v < 0 or (positive and v == 0):
            raise PorError(f"root file: {key}[{s!r}] must be a {'positive' if positive else 'non-negative'} integer, got {v!r}")
        out[s] = v
    return out


def root_cover(doc: Any) -> dict[str, int]:
    """Check a root document's shape and return the token cover per symbol, recomputed from the
    custodian aggregates and multipliers it publishes (and required to agree with its stated cover)."""
    if not isinstance(doc, Mapping) or doc.get("kind") != ROOT_KIND:
        raise PorError(f"not a stockledger proof-of-reserves root file (kind must be {ROOT_KIND!r})")
    if doc.get("version") not in ROOT_VERSIONS_READ:
        raise PorError(f"root file version {doc.get('version')!r} is not supported (this verifier reads {ROOT_VERSIONS_READ})")
    symbols = doc.get("symbols")
    if not isinstance(symbols, list) or not symbols or not all(isinstance(s, str) for s in symbols):
        raise PorError("root file: 'symbols' must be a non-empty list of strings")
    for key in ("snapshot_id", "root_hash"):
        if not isinstance(doc.get(key), str):
            raise PorError(f"root file: {key!r} must be a string")
    aggregates = _int_map(doc, "custodian_aggregates", symbols)
    multipliers = _int_map(doc, "multipliers", symbols, positive=True)
    cover = {s: tokens_covered_floor(aggregates[s], multipliers[s]) for s in symbols}
    if "custodian_token_cover" in doc:
        stated = _int_map(doc, "custodian_token_cover", symbols)
        for s in symbols:
            if stated[s] != cover[s]:
                raise PorError(
                    f"root file is inconsistent: custodian_token_cover of {s} is {stated[s]} but "
                    f"floor({aggregates[s]} x 1e9 / {multipliers[s]}) = {cover[s]}"
                )
    return cover


def root_sums_of(proof: Mapping[str, Any], symbol: str) -> Any:
    sums = proof.get("root_sums")
    return sums.get(symbol) if isinstance(sums, Mapping) else None


def verify_against_root(proof: Any, root: Mapping[str, Any] | str) -> tuple[VerifiedProof, list[str]]:
    """Verify a proof against a root document (full check) or a bare root hash (inclusion only).

    Returns the verified proof and notes for the reader; raises ProofError (from the Merkle-sum
    verifier) or PorError (an unusable root file).
    """
    notes: list[str] = []
    if isinstance(root, str):
        verified = verify_proof(proof, root)
        notes.append("root given as a bare hash: inclusion checked, the reserve check (root sums <= custodian) was not")
        return verified, notes
    cover = root_cover(root)
    try:
        verified = verify_proof(
            proof, root["root_hash"], cover, expected_snapshot_id=root["snapshot_id"], expected_symbols=root["symbols"]
        )
    except ProofError as exc:
        m = re.match(r"liabilities exceed reserves for (\S+):", str(exc))
        if m is None or m.group(1) not in cover:
            raise
        # The reserve check runs after the root matched: say so, and in the root file's own units.
        sym = m.group(1)
        aggregate, mult = root["custodian_aggregates"][sym], root["multipliers"][sym]
        raise ProofError(
            f"the account is included in the published root, but liabilities exceed reserves for {sym}: root sum "
            f"{root_sums_of(proof, sym)} nano-tokens > {cover[sym]} nano-tokens covered by the custodian aggregate "
            f"{aggregate} nano-shares at multiplier {mult} (floor(aggregate x 1e9 / multiplier))"
        ) from None
    stated_sums = root.get("root_sums")
    if stated_sums is not None and dict(stated_sums) != verified.root_sums:
        raise ProofError(f"the root file's root_sums {dict(stated_sums)} differ from the proof's recomputed {verified.root_sums}")
    sources = root.get("custodian_sources") or {}
    fallback = [s for s in root["symbols"] if sources.get(s) == SOURCE_LEDGER]
    if fallback:
        notes.append(
            f"no custodian statement for {', '.join(fallback)}: its aggregate is the ledger's own book, not the custodian's"
        )
    return verified, notes


# --------------------------------------------------------------------------- binding to the Merkle log


def root_log_binding(doc: Mapping[str, Any]) -> tuple[int, str] | None:
    """(tree size, root hex) of the log a root file was computed from; None for a version-1 root."""
    log = doc.get("log")
    if log is None:
        return None
    size, root = (log.get("tree_size"), log.get("root_hash")) if isinstance(log, Mapping) else (None, None)
    if type(size) is not int or size < 0 or not isinstance(root, str) or not re.fullmatch(r"[0-9a-f]{64}", root):
        raise PorError("root file: 'log' must hold tree_size (integer) and root_hash (64 lowercase hex)")
    return size, root


def check_log_binding(doc: Mapping[str, Any], checkpoint_size: int, checkpoint_root_hex: str) -> None:
    """The root file must name exactly the log state of the (signature-checked) checkpoint."""
    binding = root_log_binding(doc)
    if binding is None:
        raise PorError("the root file names no Merkle log (version 1): it is not bound to any history")
    if binding != (checkpoint_size, checkpoint_root_hex):
        raise PorError(f"the root was computed from the log of size {binding[0]} root {binding[1][:16]}..., "
                       f"not the checkpoint's size {checkpoint_size} root {checkpoint_root_hex[:16]}...")


def proof_file_name(account: str) -> str:
    """The file `por prove --all` writes for an account (and `serve --por-dir` reads): percent-encoded, so any id
    stays in the directory."""
    from urllib.parse import quote

    return f"proof-{quote(account, safe='')}.json"
