"""The projector's batch bound, apart from the projector so the CLI's defaults need neither DuckDB nor Arrow."""

# Records per transaction at most: 40,000 PostingBatch records give the postings and the legs a full DuckDB row
# group each, which DuckDB writes to the file directly instead of through the WAL (BENCHMARKS.md, "Audit").
MAX_BATCH_RECORDS = 40_000
