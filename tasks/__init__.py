"""The pipeline's steps: each module one step (preflight, sync an account, data quality, prices, artifacts), a plain
function and its thin Prefect task. Every @task of the project is here."""
