"""RFC 9162 (RFC 6962) Merkle log over the ledger's total order: hashes, the fold's frontier, proofs, verification.

Pure and deterministic. Leaf hash H(0x00 || d), node hash H(0x01 || left || right), H = SHA-256; a tree
whose size is not a power of two splits at the largest power of two below its size (RFC 9162 section
2.1.1). The fold keeps only the frontier (the roots of the perfect subtrees that make up the tree, one per
set bit of its size: O(log n) memory, amortised two hashes per leaf); proofs are built by the shell from
the stored leaf hashes and checked here with the RFC's verification algorithms (sections 2.1.3.2 and
2.1.4.2), which need nothing but the proof, the sizes and the roots.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

HASH_BYTES = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()  # e3b0c442...: the root of the empty tree


class ProofError(ValueError):
    """A Merkle log proof does not verify; the message says which check failed."""


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


@dataclass
class Frontier:
    """The log as the fold keeps it: its size and the roots of its perfect subtrees, largest first."""

    size: int = 0
    subtrees: list[bytes] = field(default_factory=list)

    def append(self, leaf: bytes) -> None:
        """Add one leaf hash: merge equal-height subtrees, as many as the trailing one bits of size."""
        h, s, stack = leaf, self.size, self.subtrees
        while s & 1:
            h = node_hash(stack.pop(), h)
            s >>= 1
        stack.append(h)
        self.size += 1

    def root(self) -> bytes:
        if not self.subtrees:
            return EMPTY_ROOT
        r = self.subtrees[-1]
        for h in reversed(self.subtrees[:-1]):
            r = node_hash(h, r)
        return r

    def copy(self) -> Frontier:
        return Frontier(self.size, list(self.subtrees))


def root_of(leaves: Sequence[bytes], lo: int = 0, hi: int | None = None) -> bytes:
    """MTH(D[lo:hi]) over leaf hashes (RFC 9162 2.1.1), bottom-up over perfect subtrees."""
    hi = len(leaves) if hi is None else hi
    n = hi - lo
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaves[lo]
    if n & (n - 1) == 0:  # perfect subtree: pair up level by level (no recursion, no slicing per node)
        level = list(leaves[lo:hi])
        while len(level) > 1:
            level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level), 2)]
        return level[0]
    k = _split(n)
    return node_hash(root_of(leaves, lo, lo + k), root_of(leaves, lo + k, hi))


def inclusion_proof(leaves: Sequence[bytes], index: int, size: int) -> list[bytes]:
    """PATH(index, D[0:size]) (RFC 9162 2.1.3.1): the audit path of one leaf in the tree of the first size leaves."""
    if not 0 <= index < size <= len(leaves):
        raise ValueError(f"leaf {index} is not in a tree of size {size} (log holds {len(leaves)})")
    path: list[bytes] = []
    lo, hi = 0, size
    while hi - lo > 1:  # walk down; siblings are collected top-down, the path lists them bottom-up
        k = _split(hi - lo)
        if index < lo + k:
            path.append(root_of(leaves, lo + k, hi))
            hi = lo + k
        else:
            path.append(root_of(leaves, lo, lo + k))
            lo = lo + k
    path.reverse()
    return path


def consistency_proof(leaves: Sequence[bytes], old_size: int, new_size: int) -> list[bytes]:
    """PROOF(old, D[0:new]) (RFC 9162 2.1.4.1): shows the tree of old_size leaves is a prefix of the new one."""
    if not 0 <= old_size <= new_size <= len(leaves):
        raise ValueError(f"no consistency proof from size {old_size} to {new_size} (log holds {len(leaves)})")
    if old_size == 0 or old_size == new_size:
        return []
    path: list[bytes] = []
    lo, hi, m, whole = 0, new_size, old_size, True  # SUBPROOF(m, D[lo:hi], whole)
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            path.append(root_of(leaves, lo + k, hi))
            hi = lo + k
        else:
            path.append(root_of(leaves, lo, lo + k))
            lo, m, whole = lo + k, m - k, False
    if not whole:
        path.append(root_of(leaves, lo, hi))
    path.reverse()
    return path


def _check_hash(name: str, h: bytes) -> None:
    if not isinstance(h, bytes | bytearray) or len(h) != HASH_BYTES:
        raise ProofError(f"{name} must be {HASH_BYTES} bytes")


def root_from_inclusion(index: int, size: int, leaf: bytes, path: Sequence[bytes]) -> bytes:
    """The root an inclusion proof leads to (RFC 9162 2.1.3.2 steps 1-5, without the final comparison)."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    _check_hash("leaf hash", leaf)
    fn, sn, r = index, size - 1, bytes(leaf)
    for i, p in enumerate(path):
        _check_hash(f"proof[{i}]", p)
        if sn == 0:
            raise ProofError(f"inclusion proof is too long: {len(path)} hashes for leaf {index} of {size}")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"inclusion proof is too short: {len(path)} hashes for leaf {index} of {size}")
    return r


def verify_inclusion(index: int, size: int, leaf: bytes, path: Sequence[bytes], root: bytes) -> None:
    """Raise ProofError unless path proves leaf at index in the tree of this size and root."""
    _check_hash("root", root)
    got = root_from_inclusion(index, size, leaf, path)
    if got != root:
        raise ProofError(f"inclusion proof leads to root {got.hex()}, not {bytes(root).hex()}")


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes, path: Sequence[bytes]) -> None:
    """Raise ProofError unless path proves the tree (old_size, old_root) is a prefix of (new_size, new_root)."""
    _check_hash("old root", old_root)
    _check_hash("new root", new_root)
    if not 0 <= old_size <= new_size:
        raise ProofError(f"old size {old_size} is not between 0 and the new size {new_size}")
    if old_size == new_size:
        if path:
            raise ProofError("equal sizes need an empty consistency proof")
        if old_root != new_root:
            raise ProofError("equal sizes with different roots: the log forked")
        return
    if old_size == 0:
        if path:
            raise ProofError("a proof from the empty tree must be empty")
        return
    if not path:
        raise ProofError("empty consistency proof between different sizes")
    for i, p in enumerate(path):
        _check_hash(f"proof[{i}]", p)
    nodes = list(path)
    if old_size & (old_size - 1) == 0:  # the old tree is a perfect subtree of the new one: its root is the seed
        nodes.insert(0, bytes(old_root))
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = nodes[0]
    for c in nodes[1:]:
        if sn == 0:
            raise ProofError(f"consistency proof is too long: {len(path)} hashes for {old_size} -> {new_size}")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"consistency proof is too short: {len(path)} hashes for {old_size} -> {new_size}")
    if fr != old_root:
        raise ProofError(f"consistency proof does not lead to the old root {bytes(old_root).hex()}")
    if sr != new_root:
        raise ProofError(f"consistency proof does not lead to the new root {bytes(new_root).hex()}")
