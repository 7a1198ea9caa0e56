"""emag-sync: eMAG Marketplace products and offers into PostgreSQL, orchestrated by Prefect."""

__version__ = "0.1.0"
