"""From results to what the user reads: the join of records with their answers, the columns of a
row, and the sinks (JSONL, CSV, Parquet) that write them."""
