"""emag-sync's library: settings, errors, schema, database, eMAG limits and API client, run history, price rules.

No Prefect task or flow lives here, and nothing here imports flows/ or tasks/ except the CLI (emag_sync.cli).
"""

__version__ = "0.1.0"
