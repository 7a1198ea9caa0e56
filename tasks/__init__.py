"""Client, transform, load and run bookkeeping: plain functions with thin Prefect task wrappers."""
