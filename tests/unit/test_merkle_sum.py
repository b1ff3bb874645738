"""Tests of the Merkle-sum liability tree (ledger/merkle_sum.py, DESIGN.md section 7).

The expected hashes are recomputed here from the written byte encoding with hashlib/struct
directly, never through the module's own helpers.
"""

from __future__ import annotations

import copy
import gc
import hashlib
import hmac
import json
import random
import re
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.merkle_sum import (
    LiabilityError,
    ProofError,
    Tree,
    UnknownAccountError,
    VerifiedProof,
    build_tree,
    commitment,
    derive_salt,
    verify_proof,
)

SNAP = "2024-06-30T00:00:00Z"
SYMBOLS = ["AAPL", "TSLA", "NVDA"]
SECRET = b"k" * 32
U64 = 2**64


# --------------------------------------------------------------------------- independent reference


def ref_str(s: str) -> bytes:
    b = s.encode("utf-8")
    return struct.pack(">I", len(b)) + b


def ref_commitment(snap: str, account: str, salt: bytes) -> bytes:
    return hashlib.sha256(ref_str("por-user-v1") + ref_str(snap) + ref_str(account) + salt).digest()


def ref_u64s(values) -> bytes:
    return b"".join(struct.pack(">Q", v) for v in values)


def ref_root(snap: str, k: int, balances) -> tuple[bytes, tuple[int, ...]]:
    """Straightforward recursive reference: sorted leaves, padding to a power of two."""
    nodes = []
    for account, salt, qty in sorted(balances, key=lambda b: b[0]):
        c = ref_commitment(snap, account, salt)
        nodes.append((hashlib.sha256(b"\x00" + c + ref_u64s(qty)).digest(), tuple(qty)))
    size = 1
    while size < len(nodes):
        size *= 2
    pad = (hashlib.sha256(b"\x02").digest(), (0,) * k)
    nodes += [pad] * (size - len(nodes))
    while len(nodes) > 1:
        nxt = []
        for (lh, ls), (rh, rs) in zip(nodes[0::2], nodes[1::2], strict=True):
            h = hashlib.sha256(b"\x01" + lh + ref_u64s(ls) + rh + ref_u64s(rs)).digest()
            nxt.append((h, tuple(a + b for a, b in zip(ls, rs, strict=True))))
        nodes = nxt
    return nodes[0]


def make_balances(n: int, seed: int = 7, k: int = len(SYMBOLS)):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        account = f"acct-{i:03d}"
        qty = tuple(rng.choice([0, 1, rng.randrange(10**6), rng.randrange(10**15)]) for _ in range(k))
        out.append((account, derive_salt(SECRET, SNAP, account), qty))
    rng.shuffle(out)
    return out


def column_totals(balances, symbols=SYMBOLS) -> dict[str, int]:
    return {s: sum(b[2][j] for b in balances) for j, s in enumerate(symbols)}


@pytest.fixture(scope="module")
def seven():
    balances = make_balances(7)
    tree = build_tree(SNAP, SYMBOLS, balances)
    return tree, balances


def proof_of(tree: Tree, account: str) -> dict:
    # JSON round trip: what a user really receives
    return json.loads(json.dumps(tree.proof(account)))


def expect_fail(proof, root_hex, pattern, aggregates=None, **kw):
    with pytest.raises(ProofError, match=pattern) as info:
        verify_proof(proof, root_hex, aggregates, **kw)
    return str(info.value)


# --------------------------------------------------------------------------- hand-computed case


def test_two_accounts_hand_computed_root():
    snap, symbols = "snap-1", ["AAPL", "TSLA"]
    salt_a, salt_b = bytes(range(32)), bytes(range(32, 64))
    tree = build_tree(snap, symbols, [("bob", salt_b, (3, 0)), ("alice", salt_a, (10, 7))])

    def s(x: str) -> bytes:
        return len(x.encode()).to_bytes(4, "big") + x.encode()

    c_alice = hashlib.sha256(s("por-user-v1") + s("snap-1") + s("alice") + salt_a).digest()
    c_bob = hashlib.sha256(s("por-user-v1") + s("snap-1") + s("bob") + salt_b).digest()
    leaf_alice = hashlib.sha256(b"\x00" + c_alice + struct.pack(">QQ", 10, 7)).digest()
    leaf_bob = hashlib.sha256(b"\x00" + c_bob + struct.pack(">QQ", 3, 0)).digest()
    root = hashlib.sha256(
        b"\x01" + leaf_alice + struct.pack(">QQ", 10, 7) + leaf_bob + struct.pack(">QQ", 3, 0)
    ).digest()

    assert tree.root() == (root.hex(), {"AAPL": 13, "TSLA": 7})
    assert commitment(snap, "alice", salt_a) == c_alice
    p = tree.proof("bob")
    assert p["leaf_index"] == 1
    assert p["path"] == [{"side": "left", "hash": leaf_alice.hex(), "sums": {"AAPL": 10, "TSLA": 7}}]
    v = verify_proof(p, root.hex(), {"AAPL": 13, "TSLA": 7})
    assert isinstance(v, VerifiedProof)
    assert v.quantities == {"AAPL": 3, "TSLA": 0}
    assert v.commitment == c_bob.hex()


def test_derive_salt_is_hmac_and_deterministic():
    msg = ref_str("por-salt-v1") + ref_str(SNAP) + ref_str("alice")
    expected = hmac.new(SECRET, msg, hashlib.sha256).digest()
    assert derive_salt(SECRET, SNAP, "alice") == expected
    assert len(expected) == 32
    assert derive_salt(SECRET, SNAP, "alice") != derive_salt(SECRET, SNAP, "alicf")
    assert derive_salt(SECRET, SNAP, "alice") != derive_salt(SECRET, "other", "alice")
    with pytest.raises(ValueError):
        derive_salt(b"short", SNAP, "alice")


def test_length_prefix_keeps_fields_apart():
    salt = bytes(32)
    assert commitment("ab", "c", salt) != commitment("a", "bc", salt)
    assert commitment(SNAP, "é", salt) == ref_commitment(SNAP, "é", salt)  # 2 UTF-8 bytes


# --------------------------------------------------------------------------- every size


@pytest.mark.parametrize("n", [1, 2, 3, 5, 6, 7, 8, 33])
def test_every_proof_verifies_and_sums_are_column_totals(n):
    balances = make_balances(n, seed=n)
    tree = build_tree(SNAP, SYMBOLS, balances)
    root_hex, root_sums = tree.root()
    totals = column_totals(balances)
    assert root_sums == totals
    ref_hash, ref_sums = ref_root(SNAP, len(SYMBOLS), balances)
    assert root_hex == ref_hash.hex()
    assert ref_sums == tuple(totals[s] for s in SYMBOLS)
    assert len(tree) == n
    depth = (n - 1).bit_length()
    assert tree.depth == depth
    for account, salt, qty in balances:
        p = proof_of(tree, account)
        assert len(p["path"]) == depth
        assert p["salt"] == salt.hex()
        v = verify_proof(p, root_hex, totals)
        assert v.account_id == account
        assert v.quantities == dict(zip(SYMBOLS, qty, strict=True))
        assert v.root_sums == totals
        assert v.root_hash == root_hex


def test_padding_sibling_is_h02_with_zero_sums():
    balances = make_balances(3)
    tree = build_tree(SNAP, SYMBOLS, balances)
    last = sorted(b[0] for b in balances)[-1]
    p = tree.proof(last)
    assert p["leaf_index"] == 2
    assert p["path"][0] == {
        "side": "right",
        "hash": hashlib.sha256(b"\x02").hexdigest(),
        "sums": dict.fromkeys(SYMBOLS, 0),
    }


def test_empty_tree_is_a_single_padding_node():
    tree = build_tree(SNAP, SYMBOLS, [])
    assert tree.root() == (hashlib.sha256(b"\x02").hexdigest(), dict.fromkeys(SYMBOLS, 0))
    with pytest.raises(UnknownAccountError):
        tree.proof("nobody")


def test_unknown_account():
    tree = build_tree(SNAP, SYMBOLS, make_balances(3))
    with pytest.raises(UnknownAccountError, match="'zed' is not in snapshot"):
        tree.proof("zed")


def test_determinism_any_input_order():
    balances = make_balances(33)
    roots = set()
    for seed in range(5):
        shuffled = list(balances)
        random.Random(seed).shuffle(shuffled)
        roots.add(build_tree(SNAP, SYMBOLS, iter(shuffled)).root()[0])
    assert len(roots) == 1
    # lists instead of tuples, bytearray salts: same commitment
    as_lists = [(a, bytearray(s), list(q)) for a, s, q in balances]
    assert build_tree(SNAP, SYMBOLS, as_lists).root()[0] in roots
    # any change of snapshot, symbol order, salt or balance changes the root
    assert build_tree("other", SYMBOLS, balances).root()[0] not in roots
    a, s, q = balances[0]
    assert build_tree(SNAP, SYMBOLS, [(a, s, (q[0] + 1, *q[1:])), *balances[1:]]).root()[0] not in roots
    assert build_tree(SNAP, SYMBOLS, [(a, bytes(32), q), *balances[1:]]).root()[0] not in roots


def test_build_restores_gc_state():
    assert gc.isenabled()
    build_tree(SNAP, SYMBOLS, make_balances(5))
    assert gc.isenabled()
    gc.disable()
    try:
        build_tree(SNAP, SYMBOLS, make_balances(5))
        assert not gc.isenabled()
    finally:
        gc.enable()


# --------------------------------------------------------------------------- build-time refusals


def _salt(a: str) -> bytes:
    return derive_salt(SECRET, SNAP, a)


@pytest.mark.parametrize(
    ("balances", "pattern"),
    [
        ([("a", _salt("a"), (1, 2, 3)), ("b", _salt("b"), (1, -1, 0))], r"'b'.*negative balance -1 for TSLA"),
        ([("a", _salt("a"), (1, 2, U64))], r"'a'.*NVDA does not fit in 64 bits"),
        ([("a", _salt("a"), (U64 - 1, 0, 0)), ("b", _salt("b"), (1, 0, 0))], r"sum of AAPL overflows 2\^64"),
        ([("a", _salt("a"), (2**63, 0, 0)), ("b", _salt("b"), (2**63, 0, 0))], r"sum of AAPL overflows"),
        ([("a", _salt("a"), (1, 2))], r"2 quantities given for 3 symbols"),
        ([("a", _salt("a"), (1, 2.5, 3))], r"quantity of TSLA must be an integer"),
        ([("a", b"short", (1, 2, 3))], r"salt must be exactly 32 bytes"),
        ([("a", "x" * 32, (1, 2, 3))], r"salt must be exactly 32 bytes"),
        ([(7, _salt("a"), (1, 2, 3))], r"account id must be a non-empty string"),
        (
            [("b", _salt("b"), (1, 2, 3)), (7, _salt("a"), (1, 2, 3))],
            r"account id must be a non-empty string",
        ),
        ([("", _salt("a"), (1, 2, 3))], r"account id must be a non-empty string"),
        ([("a", _salt("a"), (1, 2, 3)), ("a", _salt("a"), (0, 0, 0))], r"'a' appears more than once"),
        ([("a", _salt("a"))], r"triple"),
        ([("a", _salt("a"), (1, 2, 3), "extra")], r"triple"),
        ([42], r"triple"),
    ],
)
def test_build_refuses_bad_liabilities(balances, pattern):
    with pytest.raises(LiabilityError, match=pattern):
        build_tree(SNAP, SYMBOLS, balances)


def test_negative_balance_is_refused_even_if_total_is_positive():
    balances = make_balances(8)
    a, s, q = balances[3]
    balances[3] = (a, s, (-5, q[1], q[2]))
    balances[4] = (balances[4][0], balances[4][1], (10**9, *balances[4][2][1:]))
    with pytest.raises(LiabilityError, match=rf"account '{a}': negative balance -5 for AAPL"):
        build_tree(SNAP, SYMBOLS, balances)


@pytest.mark.parametrize(
    ("symbols", "pattern"),
    [
        ([], "must not be empty"),
        (["A", "A"], "unique"),
        ("AAPL", "list of strings"),
        (["A", ""], r"symbols\[1\]"),
    ],
)
def test_build_refuses_bad_symbols(symbols, pattern):
    with pytest.raises(LiabilityError, match=pattern):
        build_tree(SNAP, symbols, [])


def test_max_values_fit():
    big = U64 - 1
    tree = build_tree(SNAP, ["X"], [("a", _salt("a"), (big,)), ("b", _salt("b"), (0,))])
    assert tree.root()[1] == {"X": big}
    assert verify_proof(tree.proof("a"), tree.root()[0]).root_sums == {"X": big}


# --------------------------------------------------------------------------- tampering


def _account(tree: Tree, index: int) -> str:
    return tree.account_ids[index]


def test_changed_balance(seven):
    tree, _ = seven
    p = proof_of(tree, _account(tree, 2))
    p["quantities"]["TSLA"] += 1
    expect_fail(p, tree.root()[0], "root hash mismatch")


def test_lowered_balance_cannot_be_hidden_by_sums(seven):
    tree, balances = seven
    account, _, qty = next(b for b in balances if b[2][0] > 0)
    p = proof_of(tree, account)
    p["quantities"]["AAPL"] = 0
    p["root_sums"]["AAPL"] = tree.root()[1]["AAPL"] - qty[0]
    expect_fail(p, tree.root()[0], "root hash mismatch")


def test_changed_salt(seven):
    tree, _ = seven
    p = proof_of(tree, _account(tree, 0))
    p["salt"] = ("00" if p["salt"][:2] != "00" else "11") + p["salt"][2:]
    expect_fail(p, tree.root()[0], "root hash mismatch")


def test_changed_account_id(seven):
    tree, _ = seven
    p = proof_of(tree, _account(tree, 0))
    p["account_id"] = "mallory"
    expect_fail(p, tree.root()[0], "root hash mismatch")


@pytest.mark.parametrize("level", [0, 1, 2])
def test_changed_sibling_hash(seven, level):
    tree, _ = seven
    p = proof_of(tree, _account(tree, 4))
    h = p["path"][level]["hash"]
    p["path"][level]["hash"] = ("f" if h[0] != "f" else "e") + h[1:]
    expect_fail(p, tree.root()[0], "root hash mismatch")


@pytest.mark.parametrize("level", [0, 1, 2])
def test_changed_sibling_sum(seven, level):
    tree, _ = seven
    p = proof_of(tree, _account(tree, 1))
    p["path"][level]["sums"]["NVDA"] += 1
    p["root_sums"]["NVDA"] += 1  # even a consistent story about the totals does not help
    expect_fail(p, tree.root()[0], "root hash mismatch")


@pytest.mark.parametrize("level", [0, 1, 2])
def test_negative_sibling_sum(seven, level):
    tree, _ = seven
    p = proof_of(tree, _account(tree, 1))
    p["path"][level]["sums"]["TSLA"] = -3
    msg = expect_fail(
        p, tree.root()[0], rf"sibling at level {level} \(path\[{level}\]\) has a negative sum for TSLA"
    )
    assert "-3" in msg


def test_sibling_sum_not_fitting_64_bits(seven):
    tree, _ = seven
    p = proof_of(tree, _account(tree, 1))
    p["path"][1]["sums"]["AAPL"] = U64
    expect_fail(p, tree.root()[0], r"sibling at level 1 .*sum for AAPL that does not fit in 64 bits")


def test_sum_overflowing_on_addition(seven):
    tree, _ = seven
    account = _account(tree, 1)
    p = proof_of(tree, account)
    assert p["quantities"]["NVDA"] > 0 or p["quantities"]["AAPL"] > 0
    sym = "NVDA" if p["quantities"]["NVDA"] > 0 else "AAPL"
    p["path"][0]["sums"][sym] = U64 - 1  # in range by itself; the parent overflows
    expect_fail(p, tree.root()[0], rf"sum of {sym} overflows 2\^64 at level 1")


def test_quantity_out_of_range_in_proof(seven):
    tree, _ = seven
    p = proof_of(tree, _account(tree, 1))
    p["quantities"]["AAPL"] = -1
    expect_fail(p, tree.root()[0], r"quantities has a negative quantity for AAPL")
    p["quantities"]["AAPL"] = U64
    expect_fail(p, tree.root()[0], r"quantity for AAPL that does not fit in 64 bits")


def test_wrong_root(seven):
    tree, _ = seven
    p = proof_of(tree, _account(tree, 3))
    other = build_tree(SNAP, SYMBOLS, make_balances(7, seed=99)).root()[0]
    msg = expect_fail(p, other, "root hash mismatch")
    assert other in msg


def test_stated_root_hash_differs_from_published(seven):
    tree, _ = seven
    p = proof_of(tree, _account(tree, 3))
    p["root_hash"] = "ab" * 32
    expect_fail(p, tree.root()[0], "stated root_hash")


def test_stated_root_sums_differ(seven):
    tree, _ = seven
    p = proof_of(tree, _account(tree, 3))
    p["root_sums"]["TSLA"] -= 1
    expect_fail(p, tree.root()[0], "root sum of TSLA recomputes to")


@pytest.mark.parametrize("level", [0, 1, 2])
def test_swapped_side(seven, level):
    tree, _ = seven
    p = proof_of(tree, _account(tree, 5))
    step = p["path"][level]
    step["side"] = "left" if step["side"] == "right" else "right"
    expect_fail(p, tree.root()[0], rf"sibling at level {level} .*swapped side")


def test_swapped_side_and_index(seven):
    """Flipping the side and the matching index bit together still fails (hash order changes)."""
    tree, _ = seven
    p = proof_of(tree, _account(tree, 5))  # index 0b101
    p["path"][0]["side"] = "right"
    p["leaf_index"] = 4
    expect_fail(p, tree.root()[0], "root hash mismatch")


def test_truncated_path(seven):
    tree, _ = seven
    root = tree.root()[0]
    p = proof_of(tree, _account(tree, 6))  # index 6 needs 3 levels
    p["path"].pop()
    expect_fail(p, root, r"leaf_index 6 does not fit a path of 2 level\(s\).*truncated")
    p = proof_of(tree, _account(tree, 1))  # index 1 fits 2 levels: the root no longer matches
    p["path"].pop()
    expect_fail(p, root, "root hash mismatch")
    p["path"] = []
    p["leaf_index"] = 0
    expect_fail(p, root, "root hash mismatch")


def test_extended_path(seven):
    tree, _ = seven
    p = proof_of(tree, _account(tree, 1))
    p["path"].append({"side": "right", "hash": "00" * 32, "sums": dict.fromkeys(SYMBOLS, 0)})
    expect_fail(p, tree.root()[0], "root hash mismatch")


def test_custodian_aggregates(seven):
    tree, balances = seven
    root_hex, sums = tree.root()
    p = proof_of(tree, _account(tree, 0))
    assert verify_proof(p, root_hex, dict(sums)).root_sums == sums  # equal is solvent
    assert verify_proof(p, root_hex, {s: v + 10 for s, v in sums.items()})
    short = dict(sums, TSLA=sums["TSLA"] - 1)
    msg = expect_fail(p, root_hex, "liabilities exceed reserves for TSLA", short)
    assert f"root sum {sums['TSLA']} > custodian aggregate {sums['TSLA'] - 1}" in msg
    expect_fail(
        p, root_hex, "no custodian aggregate given for NVDA", {"AAPL": sums["AAPL"], "TSLA": sums["TSLA"]}
    )
    expect_fail(p, root_hex, "custodian aggregate for AAPL must be an integer", dict(sums, AAPL="lots"))


def test_expected_snapshot_and_symbols(seven):
    tree, _ = seven
    root_hex = tree.root()[0]
    p = proof_of(tree, _account(tree, 0))
    assert verify_proof(p, root_hex, expected_snapshot_id=SNAP, expected_symbols=SYMBOLS)
    expect_fail(p, root_hex, "proof is for snapshot", expected_snapshot_id="2024-07-01")
    expect_fail(p, root_hex, "symbol order", expected_symbols=["TSLA", "AAPL", "NVDA"])


# --------------------------------------------------------------------------- structure


def _del(path):
    def f(p):
        obj = p
        for key in path[:-1]:
            obj = obj[key]
        del obj[path[-1]]

    return f


def _set(path, value):
    def f(p):
        obj = p
        for key in path[:-1]:
            obj = obj[key]
        obj[path[-1]] = value

    return f


@pytest.mark.parametrize(
    ("mutate", "pattern"),
    [
        (_del(["salt"]), r"missing field\(s\): salt"),
        (_del(["path"]), r"missing field\(s\): path"),
        (_set(["version"], 2), "unsupported proof version 2"),
        (_set(["version"], "1"), "'version' must be int, got str"),
        (_set(["leaf_index"], True), "'leaf_index' must be int, got bool"),
        (_set(["leaf_index"], -1), "leaf_index must not be negative"),
        (_set(["leaf_index"], 1.0), "'leaf_index' must be int, got float"),
        (_set(["symbols"], "AAPL"), "'symbols' must be list, got str"),
        (_set(["symbols"], []), "symbols must not be empty"),
        (_set(["symbols"], ["AAPL", 3, "NVDA"]), r"symbols\[1\] must be a non-empty string"),
        (_set(["symbols"], ["AAPL", "AAPL", "NVDA"]), "unique"),
        (_set(["account_id"], None), "'account_id' must be str, got null"),
        (_set(["account_id"], ""), "'account_id' is empty"),
        (_set(["salt"], "zz" * 32), "salt must be 64 hexadecimal characters"),
        (_set(["salt"], "ab" * 31), "salt must be 64 hexadecimal characters"),
        (_set(["salt"], " " + "ab" * 31 + "a"), "salt must be 64 hexadecimal characters"),
        (_set(["root_hash"], "xyz"), "root_hash must be 64 hexadecimal characters"),
        (_set(["quantities"], [1, 2, 3]), "'quantities' must be dict, got list"),
        (_del(["quantities", "TSLA"]), "quantities is missing TSLA"),
        (_set(["quantities", "GME"], 1), r"quantities has unknown symbol\(s\) GME"),
        (_set(["quantities", "AAPL"], "10"), "non-integer quantity for AAPL"),
        (_set(["quantities", "AAPL"], 1.0), "non-integer quantity for AAPL"),
        (_set(["quantities", "AAPL"], True), "non-integer quantity for AAPL"),
        (_set(["root_sums", "NVDA"], None), "root_sums has a non-integer sum for NVDA"),
        (_set(["path", 1], "oops"), r"sibling at level 1 \(path\[1\]\) must be an object"),
        (_del(["path", 2, "hash"]), r"sibling at level 2 \(path\[2\]\) is missing field 'hash'"),
        (_del(["path", 0, "sums"]), r"sibling at level 0 \(path\[0\]\) is missing field 'sums'"),
        (_set(["path", 0, "side"], "up"), r"sibling at level 0 .*side 'up'"),
        (_set(["path", 0, "hash"], 12), r"hash of the sibling at level 0 .*64 hexadecimal"),
        (_set(["path", 1, "sums"], [1, 2, 3]), r"sibling at level 1 .*must be an object mapping"),
        (_del(["path", 1, "sums", "AAPL"]), r"sibling at level 1 .*is missing AAPL"),
        (_set(["path", 1, "sums", "AAPL"], 2.0), r"sibling at level 1 .*non-integer sum for AAPL"),
    ],
)
def test_malformed_proofs_raise_proof_error(seven, mutate, pattern):
    tree, _ = seven
    p = proof_of(tree, _account(tree, 5))
    mutate(p)
    expect_fail(p, tree.root()[0], pattern)


@pytest.mark.parametrize("proof", [None, [], "proof", 3])
def test_non_object_proof(seven, proof):
    tree, _ = seven
    expect_fail(proof, tree.root()[0], "a proof must be a JSON object")


@pytest.mark.parametrize("root", ["", "ab", "zz" * 32, None, 5, "ab" * 33])
def test_bad_expected_root(seven, root):
    tree, _ = seven
    p = proof_of(tree, _account(tree, 0))
    expect_fail(p, root, "expected .*root hash must be 64 hexadecimal")


def test_uppercase_hex_is_accepted(seven):
    tree, _ = seven
    p = proof_of(tree, _account(tree, 0))
    p["salt"] = p["salt"].upper()
    p["path"][0]["hash"] = p["path"][0]["hash"].upper()
    assert verify_proof(p, tree.root()[0].upper()).root_hash == tree.root()[0]


# --------------------------------------------------------------------------- properties

balances_strategy = st.dictionaries(
    keys=st.text(min_size=1, max_size=8),
    values=st.tuples(
        st.binary(min_size=32, max_size=32),
        st.tuples(
            st.integers(0, 2**40),
            st.one_of(st.just(0), st.integers(0, 2**62)),
            st.integers(0, 3),
        ),
    ),
    max_size=40,
).map(lambda d: [(a, salt, q) for a, (salt, q) in d.items()])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(balances=balances_strategy, data=st.data())
def test_property_random_balances(balances, data):
    # text() may produce lone surrogates, which have no UTF-8 encoding: those must be refused
    def encodable(a):
        try:
            a.encode("utf-8")
            return True
        except UnicodeEncodeError:
            return False

    if not all(encodable(a) for a, _, _ in balances):
        with pytest.raises(LiabilityError, match="not valid UTF-8"):
            build_tree(SNAP, SYMBOLS, balances)
        return
    tree = build_tree(SNAP, SYMBOLS, balances)
    root_hex, sums = tree.root()
    totals = column_totals(balances)
    assert sums == totals
    ref_hash, _ = ref_root(SNAP, len(SYMBOLS), balances)
    assert root_hex == ref_hash.hex()
    shuffled = data.draw(st.permutations(balances))
    assert build_tree(SNAP, SYMBOLS, shuffled).root()[0] == root_hex
    for account, _, qty in balances:
        v = verify_proof(proof_of(tree, account), root_hex, totals)
        assert tuple(v.quantities.values()) == qty
    if balances:  # a single changed quantity is always caught
        account, _, _ = data.draw(st.sampled_from(balances))
        p = proof_of(tree, account)
        sym = data.draw(st.sampled_from(SYMBOLS))
        p["quantities"][sym] += 1
        with pytest.raises(ProofError):
            verify_proof(p, root_hex)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=70),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3)
    ),
    max_leaves=6,
)


def _slots(obj, prefix=()):
    """Every (container, key) in a JSON tree."""
    items = obj.items() if isinstance(obj, dict) else enumerate(obj)
    for key, value in items:
        yield prefix + (key,)
        if isinstance(value, (dict, list)):
            yield from _slots(value, prefix + (key,))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_property_garbage_only_raises_proof_error(seven, data):
    """Whatever part of a proof is replaced or removed, only ProofError (or success) comes out."""
    tree, _ = seven
    p = copy.deepcopy(tree.proof(_account(tree, 5)))
    root_hex = tree.root()[0]
    for _ in range(data.draw(st.integers(1, 3))):
        slots = list(_slots(p))
        if not slots:
            break
        path = data.draw(st.sampled_from(slots))
        parent = p
        for key in path[:-1]:
            parent = parent[key]
        if data.draw(st.booleans()):
            parent[path[-1]] = data.draw(json_values)
        elif isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent.pop(path[-1])
    try:
        verify_proof(p, root_hex)
    except ProofError as exc:
        assert str(exc)
        assert not re.fullmatch(r"'?\w+'?", str(exc))  # a sentence, not a bare key


def test_proof_is_json_and_has_the_documented_fields(seven):
    tree, _ = seven
    p = tree.proof(_account(tree, 5))
    assert json.loads(json.dumps(p)) == p
    assert set(p) == {
        "version",
        "snapshot_id",
        "symbols",
        "account_id",
        "salt",
        "quantities",
        "leaf_index",
        "path",
        "root_hash",
        "root_sums",
    }
    assert p["version"] == 1 and p["snapshot_id"] == SNAP and p["symbols"] == SYMBOLS
    assert p["leaf_index"] == 5
    assert [s["side"] for s in p["path"]] == ["left", "right", "left"]  # 5 = 0b101
    assert (p["root_hash"], p["root_sums"]) == tree.root()
