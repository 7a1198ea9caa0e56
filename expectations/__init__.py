"""Great Expectations suites and checkpoint for the loaded tables."""
