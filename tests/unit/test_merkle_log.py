"""RFC 9162 Merkle log: the transparency-dev/merkle test vectors, odd sizes against a naive reference, tampering."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.log_entry import entry_bytes, entry_leaf_hash
from ledger.merkle_log import (
    EMPTY_ROOT,
    Frontier,
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_of,
    verify_consistency,
    verify_inclusion,
)

h = bytes.fromhex

# transparency-dev/merkle testonly/constants.go: LeafInputs, RootHashes (index = tree size).
LEAF_INPUTS = [h(x) for x in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                              "606162636465666768696a6b6c6d6e6f")]
ROOTS = [h(x) for x in (
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
)]
# proof/verify_test.go: inclusionProofs (leaf index 0-based here) and consistencyProofs.
INCLUSION = [
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (0, 1, []),
]
CONSISTENCY = [
    (1, 1, []),
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (6, 7, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
]
LEAVES = [leaf_hash(d) for d in LEAF_INPUTS]


def naive_root(leaves: list[bytes]) -> bytes:
    """MTH straight from RFC 9162 2.1.1, recursive and slicing: the reference for odd sizes."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + naive_root(leaves[:k]) + naive_root(leaves[k:])).digest()


def test_empty_root_is_sha256_of_nothing():
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert Frontier().root() == EMPTY_ROOT


@pytest.mark.parametrize("size", range(9))
def test_roots_of_the_vector_leaves(size):
    assert root_of(LEAVES[:size]) == ROOTS[size]
    f = Frontier()
    for leaf in LEAVES[:size]:
        f.append(leaf)
    assert f.size == size and f.root() == ROOTS[size]


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION)
def test_inclusion_vectors(index, size, path):
    expected = [h(p) for p in path]
    assert inclusion_proof(LEAVES, index, size) == expected
    verify_inclusion(index, size, LEAVES[index], expected, ROOTS[size])


@pytest.mark.parametrize(("old", "new", "path"), CONSISTENCY)
def test_consistency_vectors(old, new, path):
    expected = [h(p) for p in path]
    assert consistency_proof(LEAVES, old, new) == expected
    verify_consistency(old, new, ROOTS[old], ROOTS[new], expected)


def _flipped(path: list[bytes], i: int, byte: int) -> list[bytes]:
    out = list(path)
    b = bytearray(out[i])
    b[byte] ^= 0x01
    out[i] = bytes(b)
    return out


@pytest.mark.parametrize(("index", "size", "path"), [v for v in INCLUSION if v[2]])
def test_inclusion_fails_on_every_tampered_byte_and_shape(index, size, path):
    proof = [h(p) for p in path]
    root = ROOTS[size]
    for i in range(len(proof)):
        for byte in range(32):
            with pytest.raises(ProofError):
                verify_inclusion(index, size, LEAVES[index], _flipped(proof, i, byte), root)
    bad_leaf = bytearray(LEAVES[index])
    bad_leaf[0] ^= 1
    wrong = [
        (index ^ 1, size, LEAVES[index], proof, root), (index, size * 2, LEAVES[index], proof, root),
        (index, size, bytes(bad_leaf), proof, root), (index, size, LEAVES[index], proof, EMPTY_ROOT),
        (index, size, LEAVES[index], proof[:-1], root), (index, size, LEAVES[index], [*proof, root], root),
        (index, size, LEAVES[index], [root, *proof], root), (size, size, LEAVES[index], proof, root),
    ]
    for args in wrong:
        with pytest.raises(ProofError):
            verify_inclusion(*args)


@pytest.mark.parametrize(("old", "new", "path"), [v for v in CONSISTENCY if v[2]])
def test_consistency_fails_on_every_tampered_byte_and_shape(old, new, path):
    proof = [h(p) for p in path]
    r1, r2 = ROOTS[old], ROOTS[new]
    for i in range(len(proof)):
        for byte in range(32):
            with pytest.raises(ProofError):
                verify_consistency(old, new, r1, r2, _flipped(proof, i, byte))
    wrong = [
        (old - 1, new, r1, r2, proof), (old + 1, new, r1, r2, proof), (old, new * 2, r1, r2, proof),
        (old, new, r2, r1, proof), (old, new, r1, r2, []), (old, new, r1, r2, proof[:-1]),
        (old, new, r1, r2, [*proof, r1]), (old, new, r1, r2, [r2, *proof]), (new, old, r2, r1, proof),
    ]
    for args in wrong:
        with pytest.raises(ProofError):
            verify_consistency(*args)


def test_equal_sizes_need_equal_roots_and_an_empty_proof():
    verify_consistency(3, 3, ROOTS[3], ROOTS[3], [])
    with pytest.raises(ProofError):
        verify_consistency(3, 3, ROOTS[3], ROOTS[4], [])
    with pytest.raises(ProofError):
        verify_consistency(3, 3, ROOTS[3], ROOTS[3], [ROOTS[3]])


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=70), st.data())
def test_odd_sizes_agree_with_the_naive_reference_and_proofs_verify(size, data):
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(size)]
    f = Frontier()
    for n, leaf in enumerate(leaves, 1):
        f.append(leaf)
        assert f.root() == naive_root(leaves[:n])
    assert root_of(leaves) == naive_root(leaves)
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    verify_inclusion(index, size, leaves[index], inclusion_proof(leaves, index, size), naive_root(leaves))
    old = data.draw(st.integers(min_value=1, max_value=size))
    verify_consistency(old, size, naive_root(leaves[:old]), naive_root(leaves),
                       consistency_proof(leaves, old, size))


def test_entry_bytes_layout_and_null_equals_empty():
    data = entry_bytes("trade.events", "acct-1", b"\x00\x01")
    assert data == (b"\x01" + (12).to_bytes(4, "big") + b"trade.events" + (6).to_bytes(4, "big") + b"acct-1"
                    + (2).to_bytes(4, "big") + b"\x00\x01")
    assert entry_bytes("t", None, None) == entry_bytes("t", b"", b"") == entry_bytes("t", "", b"")
    # A field boundary cannot be moved without changing the leaf: ("ab", "c") is not ("a", "bc").
    assert entry_leaf_hash("t", "ab", b"c") != entry_leaf_hash("t", "a", b"bc")
    assert entry_leaf_hash("t", "k", b"v") == leaf_hash(entry_bytes("t", "k", b"v"))
