"""Audit benchmarks: projector vs raw consume+decode, audit query latencies, PoR, Merkle-sum root and proofs."""
