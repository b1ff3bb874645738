"""Merkle-sum tree over user liabilities, for proof of reserves (DESIGN.md section 7).

Pure and deterministic: no I/O, no clock, no randomness. The same inputs (in any order) always
give the same root, byte for byte. The design follows ethereum/research ``proof_of_solvency``,
Summa and OKX PoR v2: every node commits to the hash *and* to the per-symbol sums of both of its
children, so an operator cannot make a subtree look smaller than the sum of its leaves, and every
sum a verifier sees is checked to lie in [0, 2^64), so a negative balance can never be hidden.

Byte encoding (version 1)
-------------------------
``H`` is SHA-256 (32-byte digest). ``|`` is byte concatenation.

* ``str(s)``    = ``u32be(len(b)) | b`` where ``b = s.encode("utf-8")`` (strict: lone surrogates
  are refused; no Unicode normalisation is applied, the code points are taken as given). The
  length prefix makes every field self-delimiting, so ``("ab", "c")`` and ``("a", "bc")`` can
  never produce the same bytes.
* ``u32be(n)``  = 4-byte big-endian unsigned integer; ``u64be(n)`` = 8-byte big-endian unsigned
  integer, ``0 <= n < 2**64``.
* ``sums(v)``   = ``u64be(v[0]) | u64be(v[1]) | ... | u64be(v[k-1])`` in the snapshot's fixed
  symbol order (the ``symbols`` list passed to :func:`build_tree` and carried in every proof).
* salt          = exactly 32 raw bytes (no length prefix: the length is fixed).

Hashes::

    commitment = H( str("por-user-v1") | str(snapshot_id) | str(account_id) | salt32 )
    leaf       = H( 0x00 | commitment | sums(quantities) )           sums = quantities
    node       = H( 0x01 | L.hash | sums(L.sums) | R.hash | sums(R.sums) ), sums = L.sums + R.sums
    padding    = H( 0x02 ),                                           sums = (0, ..., 0)

    salt       = HMAC-SHA256( key=secret, msg = str("por-salt-v1") | str(snapshot_id) | str(account_id) )

Tree shape: the leaves are sorted by ``account_id`` (Python ``str`` order, which is the same as
the order of the UTF-8 bytes), then padded on the right with padding leaves up to the next power
of two (a single account gives a tree of one leaf, which is also the root; zero accounts give a
single padding leaf). Leaf ``i`` is the left child of its parent when ``i`` is even.

Proof file (JSON-serialisable ``dict``, produced by :meth:`Tree.proof`)::

    {
      "version": 1,
      "snapshot_id": "2024-06-30T00:00:00Z",
      "symbols": ["AAPL", "TSLA"],                 # the fixed symbol order
      "account_id": "alice",
      "salt": "<64 hex chars>",
      "quantities": {"AAPL": 10, "TSLA": 0},
      "leaf_index": 5,
      "path": [                                    # bottom-up; path[i] is the sibling at level i
        {"side": "left", "hash": "<64 hex>", "sums": {"AAPL": 3, "TSLA": 7}},
        ...
      ],
      "root_hash": "<64 hex chars>",
      "root_sums": {"AAPL": 1234, "TSLA": 99}
    }

``side`` is the side on which the *sibling* sits: ``"left"`` means
``parent = H(0x01 | sibling | sibling sums | current | current sums)``. Level 0 is the leaf level
(``path[0]`` is the leaf's sibling). It must agree with bit ``i`` of ``leaf_index``. Quantities
and sums are JSON integers (up to 2^64 - 1: a JavaScript consumer must parse them as BigInt).

Limitations:

* Inherent to plain Merkle-sum trees (as in Summa/OKX): a user's proof reveals the exact
  balances of the sibling leaf (but not its account id, which is hidden behind the salted
  commitment).
* The root hash commits to the snapshot id (through every commitment) and to the number of
  symbols (the width of every sums field), not to the symbol *names*: publish ``snapshot_id`` and ``symbols`` next to the root and have
  verifiers pass them as ``expected_snapshot_id`` / ``expected_symbols`` to :func:`verify_proof`.
"""

from __future__ import annotations

import gc
import hashlib
import hmac
import operator
import re
import struct
import sys
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from operator import add, eq, itemgetter
from typing import Any

__all__ = [
    "PROOF_VERSION",
    "MAX_QUANTITY",
    "MerkleSumError",
    "LiabilityError",
    "ProofError",
    "UnknownAccountError",
    "Tree",
    "VerifiedProof",
    "derive_salt",
    "commitment",
    "build_tree",
    "verify_proof",
]

PROOF_VERSION = 1
LIMIT = 1 << 64  # every quantity and every sum must be < LIMIT
MAX_QUANTITY = LIMIT - 1
SALT_LEN = 32
HASH_LEN = 32

USER_TAG = "por-user-v1"
SALT_TAG = "por-salt-v1"
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
PADDING_PREFIX = b"\x02"

_U32 = struct.Struct(">I")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_sha256 = hashlib.sha256


class MerkleSumError(ValueError):
    """Base class of the errors raised by this module."""


class LiabilityError(MerkleSumError):
    """The liabilities handed to :func:`build_tree` cannot be committed (negative, too large,
    malformed, duplicated, or a sum that overflows 2^64)."""


class ProofError(MerkleSumError):
    """A proof failed verification; the message says what failed and where."""


class UnknownAccountError(MerkleSumError, KeyError):
    """:meth:`Tree.proof` was asked for an account that is not in the tree."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


# --------------------------------------------------------------------------- encoding helpers


def _enc_str(s: str) -> bytes:
    """``u32be(len(utf8)) | utf8``. Raises TypeError / UnicodeEncodeError on bad input."""
    if not isinstance(s, str):
        raise TypeError(f"expected str, got {type(s).__name__}")
    b = s.encode("utf-8")
    if len(b) >= 1 << 32:
        raise ValueError("string longer than 2^32 - 1 bytes")
    return _U32.pack(len(b)) + b


def _sums_struct(k: int) -> struct.Struct:
    return struct.Struct(f">{k}Q")


def _padding_record(k: int) -> bytes:
    return _sha256(PADDING_PREFIX).digest() + bytes(8 * k)


def derive_salt(secret: bytes, snapshot_id: str, account_id: str) -> bytes:
    """32-byte salt = HMAC-SHA256(secret, str("por-salt-v1") | str(snapshot_id) | str(account_id)).

    Lets the operator re-create every salt of a snapshot from one secret (keep it at least 32
    random bytes; at least 16 are required). A new snapshot_id gives unrelated salts, so
    commitments cannot be linked across snapshots.
    """
    if not isinstance(secret, (bytes, bytearray)):
        raise TypeError("secret must be bytes")
    if len(secret) < 16:
        raise ValueError("secret must be at least 16 bytes (32 random bytes recommended)")
    msg = _enc_str(SALT_TAG) + _enc_str(snapshot_id) + _enc_str(account_id)
    return hmac.new(bytes(secret), msg, hashlib.sha256).digest()


def commitment(snapshot_id: str, account_id: str, salt32: bytes) -> bytes:
    """User commitment = H(str("por-user-v1") | str(snapshot_id) | str(account_id) | salt32)."""
    if not isinstance(salt32, (bytes, bytearray)) or len(salt32) != SALT_LEN:
        raise ValueError("salt must be exactly 32 bytes")
    return _sha256(_enc_str(USER_TAG) + _enc_str(snapshot_id) + _enc_str(account_id) + bytes(salt32)).digest()


# --------------------------------------------------------------------------- the tree


class Tree:
    """A built Merkle-sum tree. Build it with :func:`build_tree`.

    Storage: ``levels[0]`` is the (padded) leaf level and ``levels[-1] == [root]``. Each node is a
    single ``bytes`` record ``hash(32) | sums(sums)`` -- which is exactly what its parent hashes
    (``node = H(0x01 | left record | right record)``), so no per-node objects are kept.
    """

    __slots__ = ("snapshot_id", "symbols", "_levels", "_ids", "_salts", "_unpack")

    def __init__(
        self,
        snapshot_id: str,
        symbols: tuple[str, ...],
        levels: list[list[bytes]],
        account_ids: list[str],
        salts: list[bytes],
    ) -> None:
        self.snapshot_id = snapshot_id
        self.symbols = symbols
        self._levels = levels
        self._ids = account_ids
        self._salts = salts
        self._unpack = _sums_struct(len(symbols)).unpack

    def __len__(self) -> int:
        """Number of (real) accounts committed."""
        return len(self._ids)

    @property
    def depth(self) -> int:
        """Number of levels above the leaves (= length of every proof path)."""
        return len(self._levels) - 1

    @property
    def account_ids(self) -> list[str]:
        """The committed account ids in leaf order (a copy)."""
        return list(self._ids)

    def _sums_dict(self, record: bytes) -> dict[str, int]:
        return dict(zip(self.symbols, self._unpack(record[HASH_LEN:]), strict=True))

    def root(self) -> tuple[str, dict[str, int]]:
        """(root hash as lowercase hex, {symbol: total quantity committed})."""
        rec = self._levels[-1][0]
        return rec[:HASH_LEN].hex(), self._sums_dict(rec)

    def leaf_index(self, account_id: str) -> int:
        ids = self._ids
        i = bisect_left(ids, account_id)
        if i == len(ids) or ids[i] != account_id:
            raise UnknownAccountError(f"account {account_id!r} is not in snapshot {self.snapshot_id!r}")
        return i

    def proof(self, account_id: str) -> dict[str, Any]:
        """The inclusion proof of ``account_id`` (JSON-serialisable; format in the module doc)."""
        index = self.leaf_index(account_id)
        levels = self._levels
        path = []
        i = index
        for level in levels[:-1]:
            sib = level[i ^ 1]
            path.append(
                {
                    "side": "left" if i & 1 else "right",
                    "hash": sib[:HASH_LEN].hex(),
                    "sums": self._sums_dict(sib),
                }
            )
            i >>= 1
        root_hash, root_sums = self.root()
        return {
            "version": PROOF_VERSION,
            "snapshot_id": self.snapshot_id,
            "symbols": list(self.symbols),
            "account_id": account_id,
            "salt": self._salts[index].hex(),
            "quantities": self._sums_dict(levels[0][index]),
            "leaf_index": index,
            "path": path,
            "root_hash": root_hash,
            "root_sums": root_sums,
        }


def _check_symbols(symbols: Any, error: type[MerkleSumError]) -> tuple[str, ...]:
    if isinstance(symbols, (str, bytes)) or not isinstance(symbols, Sequence):
        raise error("symbols must be a list of strings")
    if not symbols:
        raise error("symbols must not be empty")
    for pos, s in enumerate(symbols):
        if not isinstance(s, str) or not s:
            raise error(f"symbols[{pos}] must be a non-empty string, got {s!r}")
    if len(set(symbols)) != len(symbols):
        dups = sorted({s for s in symbols if symbols.count(s) > 1})
        raise error(f"symbols must be unique; repeated: {', '.join(dups)}")
    return tuple(symbols)


def _diagnose_entry(entry: Any, symbols: tuple[str, ...]) -> str:
    """Explain why one (account_id, salt32, quantities) entry cannot be committed."""
    try:
        account_id, salt, qty = entry
    except (TypeError, ValueError):
        return f"each balance must be a (account_id, salt32, quantities) triple, got {entry!r}"
    if type(account_id) is not str or not account_id:
        return f"account id must be a non-empty string, got {account_id!r}"
    try:
        account_id.encode("utf-8")
    except UnicodeEncodeError:
        return f"account {account_id!r}: account id is not valid UTF-8 text"
    where = f"account {account_id!r}"
    if type(salt) not in (bytes, bytearray) or len(salt) != SALT_LEN:
        return f"{where}: salt must be exactly 32 bytes"
    try:
        qty = tuple(qty)
    except TypeError:
        return f"{where}: quantities must be a sequence of integers in symbol order"
    if len(qty) != len(symbols):
        return f"{where}: {len(qty)} quantities given for {len(symbols)} symbols"
    for sym, q in zip(symbols, qty, strict=True):
        try:
            q = operator.index(q)
        except TypeError:
            return f"{where}: quantity of {sym} must be an integer, got {q!r}"
        if q < 0:
            return f"{where}: negative balance {q} for {sym} (negative balances are never committed)"
        if q >= LIMIT:
            return f"{where}: balance {q} for {sym} does not fit in 64 bits (must be < 2^64)"
    return f"{where}: cannot be encoded"


def build_tree(
    snapshot_id: str,
    symbols: Sequence[str],
    balances: Iterable[tuple[str, bytes, Sequence[int]]],
) -> Tree:
    """Commit ``balances`` -- ``(account_id, salt32, quantities in symbol order)`` -- in a tree.

    Raises :class:`LiabilityError` if any quantity is negative or >= 2^64 (or not an integer), an
    entry is malformed, an account appears twice, or any node sum reaches 2^64.
    """
    # The build allocates millions of objects but creates no reference cycles: the cyclic garbage
    # collector would only rescan the growing lists over and over (about 40% of the run time at
    # 1,000,000 accounts). Pause it for the duration and restore the caller's setting.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _build_tree(snapshot_id, symbols, balances)
    finally:
        if gc_was_enabled:
            gc.enable()


def _build_tree(
    snapshot_id: str,
    symbols: Sequence[str],
    balances: Iterable[tuple[str, bytes, Sequence[int]]],
) -> Tree:
    if not isinstance(snapshot_id, str):
        raise LiabilityError("snapshot_id must be a string")
    try:
        snap_enc = _enc_str(snapshot_id)
    except (UnicodeEncodeError, ValueError) as exc:
        raise LiabilityError(f"snapshot_id cannot be encoded: {exc}") from None
    syms = _check_symbols(symbols, LiabilityError)
    k = len(syms)
    nbytes = 8 * k
    pack = _sums_struct(k).pack
    sha = _sha256
    u32 = _U32.pack
    commit_prefix = _enc_str(USER_TAG) + snap_enc
    leaf_prefix = LEAF_PREFIX
    node_prefix = NODE_PREFIX

    def refuse(exc_entries: list) -> LiabilityError:
        for e in exc_entries:  # slow path: find the culprit for a precise message
            msg = _diagnose_entry(e, syms)
            if not msg.endswith("cannot be encoded"):
                return LiabilityError(msg)
        return LiabilityError("balances cannot be encoded (expected (account_id, salt32, quantities))")

    entries = list(balances)
    n = len(entries)
    try:
        entries.sort(key=itemgetter(0))
    except (TypeError, IndexError, KeyError):
        raise refuse(entries) from None

    # Fast path: one C-level pass per step; any bad entry makes a step raise (or is caught by the
    # set checks) and the slow path names it. struct.pack refuses negative, >= 2^64, non-integer
    # quantities and a wrong count; it reads integers through __index__, and what is committed
    # (and later shown in proofs) is exactly the packed value.
    try:
        ids: list[str] = [e[0] for e in entries]
        salts: list[bytes] = [e[1] for e in entries]
        packed = [pack(*e[2]) for e in entries]
        if n and (set(map(len, entries)) != {3} or set(map(type, ids)) != {str} or not ids[0]):
            raise TypeError
        if n and set(map(len, salts)) != {SALT_LEN}:
            raise ValueError
        salt_types = set(map(type, salts))
        if n and salt_types != {bytes}:
            if not salt_types <= {bytes, bytearray}:
                raise TypeError
            salts = [bytes(x) for x in salts]
        enc = [a.encode("utf-8") for a in ids]
        commits = [
            sha(commit_prefix + u32(len(a)) + a + salt).digest() for a, salt in zip(enc, salts, strict=True)
        ]
    except (TypeError, ValueError, struct.error, AttributeError, UnicodeEncodeError, IndexError, KeyError):
        raise refuse(entries) from None
    del enc
    if n > 1 and any(map(eq, ids, islice(ids, 1, None))):  # sorted: duplicates are adjacent
        dup = next(a for a, b in zip(ids, islice(ids, 1, None), strict=False) if a == b)
        raise LiabilityError(f"account {dup!r} appears more than once")

    # Overflow: quantities are non-negative, so every node sum is <= its column total; a node sum
    # reaches 2^64 iff the column total (the root sum) does. Totals are taken from the packed
    # bytes, i.e. from exactly what is committed.
    if n:
        column = array("Q")
        if column.itemsize != 8:  # pragma: no cover - CPython has 8-byte unsigned long long
            raise RuntimeError("array('Q') is not 64-bit on this platform")
        column.frombytes(b"".join(packed))
        if sys.byteorder == "little":
            column.byteswap()
        for j, sym in enumerate(syms):
            total = sum(column[j::k])
            if total >= LIMIT:
                raise LiabilityError(
                    f"sum of {sym} overflows 2^64: the total over all {n} accounts is {total} "
                    f"(must be < 2^64 at every node)"
                )
        del column

    leaves = [sha(leaf_prefix + c + p).digest() + p for c, p in zip(commits, packed, strict=True)]
    del commits
    # The sums of a node as one integer: int.from_bytes(u64be(s_1) | ... | u64be(s_k)). Since no
    # lane can reach 2^64 (checked above), adding two such integers never carries between lanes,
    # so the parent's packed sums are (L + R).to_bytes(8k).
    ints = [int.from_bytes(p, "big") for p in packed]
    del packed

    width = 1
    while width < n:
        width <<= 1
    if width > n:
        pad = width - n
        leaves.extend([_padding_record(k)] * pad)
        ints.extend([0] * pad)

    levels = [leaves]
    cur = leaves
    while len(cur) > 1:
        ints = list(map(add, ints[0::2], ints[1::2]))
        cur = [
            sha(node_prefix + left + right).digest() + s.to_bytes(nbytes, "big")
            for left, right, s in zip(cur[0::2], cur[1::2], ints, strict=True)
        ]
        levels.append(cur)
    return Tree(snapshot_id, syms, levels, ids, salts)


# --------------------------------------------------------------------------- verification


@dataclass(frozen=True)
class VerifiedProof:
    """What a successful :func:`verify_proof` established."""

    snapshot_id: str
    account_id: str
    symbols: tuple[str, ...]
    quantities: dict[str, int]
    leaf_index: int
    root_hash: str
    root_sums: dict[str, int]
    commitment: str


_PROOF_FIELDS = {
    "version": int,
    "snapshot_id": str,
    "symbols": list,
    "account_id": str,
    "salt": str,
    "quantities": dict,
    "leaf_index": int,
    "path": list,
    "root_hash": str,
    "root_sums": dict,
}


def _type_name(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _hex32(value: Any, where: str) -> bytes:
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise ProofError(f"{where} must be 64 hexadecimal characters (32 bytes), got {value!r:.80}")
    return bytes.fromhex(value)


def _sums_vector(value: Any, symbols: tuple[str, ...], where: str, what: str = "sum") -> tuple[int, ...]:
    """Validate a {symbol: int} mapping: exact symbol set, integers in [0, 2^64)."""
    if not isinstance(value, Mapping):
        raise ProofError(
            f"{where} must be an object mapping each symbol to an integer, got {_type_name(value)}"
        )
    missing = [s for s in symbols if s not in value]
    if missing:
        raise ProofError(f"{where} is missing {', '.join(missing)}")
    extra = sorted(str(s) for s in value if s not in symbols)
    if extra:
        raise ProofError(f"{where} has unknown symbol(s) {', '.join(extra)}")
    out = []
    for s in symbols:
        v = value[s]
        if not _is_int(v):
            raise ProofError(f"{where} has a non-integer {what} for {s}: {v!r:.40}")
        if v < 0:
            raise ProofError(f"{where} has a negative {what} for {s}: {v}")
        if v >= LIMIT:
            raise ProofError(f"{where} has a {what} for {s} that does not fit in 64 bits (>= 2^64): {v}")
        out.append(v)
    return tuple(out)


def verify_proof(
    proof: Any,
    expected_root_hash_hex: str,
    custodian_aggregates: Mapping[str, int] | None = None,
    *,
    expected_snapshot_id: str | None = None,
    expected_symbols: Sequence[str] | None = None,
) -> VerifiedProof:
    """Verify an inclusion proof against the published root, using nothing but the proof.

    Recomputes the commitment, the leaf and every node up to the root; rejects any quantity or sum
    outside [0, 2^64) at every step, a side that contradicts ``leaf_index``, a root hash that is
    not ``expected_root_hash_hex``, root sums that differ from the proof's stated ``root_sums``,
    and -- if ``custodian_aggregates`` is given -- a root sum above the custodian aggregate of its
    symbol (a symbol without an aggregate fails). ``expected_snapshot_id`` / ``expected_symbols``
    (optional) pin the snapshot and symbol order published next to the root: the root hash does
    not itself commit to the symbol names. Every failure raises :class:`ProofError`.
    """
    expected_root = _hex32(expected_root_hash_hex, "the expected (published) root hash")

    # ---- structure
    if not isinstance(proof, Mapping):
        raise ProofError(f"a proof must be a JSON object, got {_type_name(proof)}")
    missing = [f for f in _PROOF_FIELDS if f not in proof]
    if missing:
        raise ProofError(f"proof is missing field(s): {', '.join(missing)}")
    for field, typ in _PROOF_FIELDS.items():
        v = proof[field]
        ok = _is_int(v) if typ is int else isinstance(v, typ)
        if not ok:
            raise ProofError(f"proof field {field!r} must be {typ.__name__}, got {_type_name(v)}")
    if proof["version"] != PROOF_VERSION:
        raise ProofError(
            f"unsupported proof version {proof['version']} (this verifier reads {PROOF_VERSION})"
        )

    snapshot_id: str = proof["snapshot_id"]
    account_id: str = proof["account_id"]
    symbols = _check_symbols(proof["symbols"], ProofError)
    if expected_snapshot_id is not None and snapshot_id != expected_snapshot_id:
        raise ProofError(f"proof is for snapshot {snapshot_id!r}, expected {expected_snapshot_id!r}")
    if expected_symbols is not None and tuple(expected_symbols) != symbols:
        raise ProofError(
            f"proof symbol order {list(symbols)} differs from the published {list(expected_symbols)}"
        )
    if not account_id:
        raise ProofError("proof field 'account_id' is empty")
    salt = _hex32(proof["salt"], "salt")
    quantities = _sums_vector(proof["quantities"], symbols, "the account's quantities", "quantity")
    stated_root_sums = _sums_vector(proof["root_sums"], symbols, "root_sums")
    stated_root = _hex32(proof["root_hash"], "root_hash")
    index: int = proof["leaf_index"]
    path: list = proof["path"]
    if index < 0:
        raise ProofError(f"leaf_index must not be negative, got {index}")
    if index >> len(path):
        raise ProofError(
            f"leaf_index {index} does not fit a path of {len(path)} level(s) "
            f"(at most {(1 << len(path)) - 1}): the path is truncated or the index is wrong"
        )

    # ---- leaf
    try:
        c = commitment(snapshot_id, account_id, salt)
    except (UnicodeEncodeError, ValueError, TypeError) as exc:
        raise ProofError(f"cannot encode snapshot_id / account_id: {exc}") from None
    pack = _sums_struct(len(symbols)).pack
    packed = pack(*quantities)
    record = _sha256(LEAF_PREFIX + c + packed).digest() + packed
    sums = quantities

    # ---- path
    for level, step in enumerate(path):
        where = f"sibling at level {level} (path[{level}])"
        if not isinstance(step, Mapping):
            raise ProofError(f"{where} must be an object with side, hash and sums, got {_type_name(step)}")
        for field in ("side", "hash", "sums"):
            if field not in step:
                raise ProofError(f"{where} is missing field {field!r}")
        side = step["side"]
        if side not in ("left", "right"):
            raise ProofError(f"{where} has side {side!r:.40}; must be 'left' or 'right'")
        expected_side = "left" if (index >> level) & 1 else "right"
        if side != expected_side:
            raise ProofError(
                f"{where} is on the {side} but leaf_index {index} puts it on the {expected_side} "
                f"(swapped side)"
            )
        sib_hash = _hex32(step["hash"], f"hash of the {where}")
        sib_sums = _sums_vector(step["sums"], symbols, where)
        sib_record = sib_hash + pack(*sib_sums)
        new_sums = tuple(map(add, sums, sib_sums))
        for sym, v in zip(symbols, new_sums, strict=True):
            if v >= LIMIT:
                raise ProofError(
                    f"sum of {sym} overflows 2^64 at level {level + 1} (parent of path[{level}]): {v}"
                )
        if side == "left":
            node_hash = _sha256(NODE_PREFIX + sib_record + record).digest()
        else:
            node_hash = _sha256(NODE_PREFIX + record + sib_record).digest()
        sums = new_sums
        record = node_hash + pack(*sums)

    # ---- root
    computed_root = record[:HASH_LEN]
    if computed_root != expected_root:
        raise ProofError(
            f"root hash mismatch: the proof recomputes to {computed_root.hex()} but the published root is "
            f"{expected_root.hex()} (altered balance, salt, sibling or path?)"
        )
    if stated_root != computed_root:
        raise ProofError(
            f"the proof's stated root_hash {stated_root.hex()} differs from the recomputed and published "
            f"root {computed_root.hex()}"
        )
    for sym, got, stated in zip(symbols, sums, stated_root_sums, strict=True):
        if got != stated:
            raise ProofError(f"root sum of {sym} recomputes to {got} but the proof states {stated}")
    if custodian_aggregates is not None:
        if not isinstance(custodian_aggregates, Mapping):
            raise ProofError("custodian aggregates must be a mapping of symbol to quantity")
        for sym, total in zip(symbols, sums, strict=True):
            if sym not in custodian_aggregates:
                raise ProofError(f"no custodian aggregate given for {sym}: cannot check reserves")
            agg = custodian_aggregates[sym]
            if not _is_int(agg):
                raise ProofError(f"custodian aggregate for {sym} must be an integer, got {agg!r:.40}")
            if total > agg:
                raise ProofError(
                    f"liabilities exceed reserves for {sym}: root sum {total} > custodian aggregate {agg}"
                )

    return VerifiedProof(
        snapshot_id=snapshot_id,
        account_id=account_id,
        symbols=symbols,
        quantities=dict(zip(symbols, quantities, strict=True)),
        leaf_index=index,
        root_hash=computed_root.hex(),
        root_sums=dict(zip(symbols, sums, strict=True)),
        commitment=c.hex(),
    )
