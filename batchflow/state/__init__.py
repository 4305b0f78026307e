"""What batchflow remembers: a pipeline's state in a store (local, gs://, s3://), leases and the
conditional writes under them, atomic file writes, and the index of every result."""
