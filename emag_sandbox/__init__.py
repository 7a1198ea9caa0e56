"""eMAG Marketplace API sandbox: a faithful stand-in for demos, tests and benchmarks."""
