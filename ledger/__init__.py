"""stockledger's pure domain core: a deterministic fold of events into ledger state (no I/O, no clock)."""
