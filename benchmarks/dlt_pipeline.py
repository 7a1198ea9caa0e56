"""The comparison pipeline, run by benchmarks/dlt_compare.py with the throwaway dlt environment's Python.

A dlt ``rest_api`` source per account reading eMAG's ``product_offer/read`` (POST, the page number in the
JSON body, a page shorter than the page size is the last), merged on ``id`` into PostgreSQL. Nothing is
checked. ``--flat`` keeps nested fields as JSON columns (``max_table_nesting=0``) instead of child tables.
Environment: the sandbox's EMAG_* lines, BENCH_DLT_DATABASE_URL (a psycopg2 URL) and DLT_PIPELINES_DIR.
Prints one JSON line: the rows in each table and the time of each stage.
"""

import json
import os
import sys
import time

started = time.perf_counter()
import dlt  # noqa: E402
from dlt.sources.helpers.rest_client.paginators import PageNumberPaginator  # noqa: E402
from dlt.sources.rest_api import rest_api_source  # noqa: E402

PAGE_SIZE = 100
FLAT = "--flat" in sys.argv[1:]


class ShortPagePaginator(PageNumberPaginator):  # type: ignore[misc]
    """Page numbers in the body (data.currentPage); stops after the first short page, as eMAG's paging ends."""

    def update_state(self, response, data=None):  # type: ignore[no-untyped-def]
        super().update_state(response, data)
        if data is None or len(data) < PAGE_SIZE:
            self._has_next_page = False


def account_source(account: str):  # type: ignore[no-untyped-def]
    prefix = f"EMAG_{account.upper()}_"
    return rest_api_source(
        {
            "client": {
                "base_url": os.environ["EMAG_API_URL"].rstrip("/") + "/",
                "auth": {
                    "type": "http_basic",
                    "username": os.environ[prefix + "USERNAME"],
                    "password": os.environ[prefix + "PASSWORD"],
                },
            },
            "resource_defaults": {"primary_key": "id", "write_disposition": "merge"},
            "resources": [
                {
                    "name": f"{account}_offers",
                    "endpoint": {
                        "path": "product_offer/read",
                        "method": "POST",
                        "json": {"data": {"currentPage": 1, "itemsPerPage": PAGE_SIZE}},
                        "data_selector": "results",
                        "paginator": ShortPagePaginator(
                            base_page=1,
                            page_body_path="data.currentPage",
                            total_path=None,
                            stop_after_empty_page=True,
                        ),
                    },
                }
            ],
        },
        name=f"emag_{account}",
        max_table_nesting=0 if FLAT else None,
    )


def main() -> None:
    variant = "flat" if FLAT else "nested"
    pipeline = dlt.pipeline(
        pipeline_name=f"emag_dlt_{variant}",
        destination=dlt.destinations.postgres(os.environ["BENCH_DLT_DATABASE_URL"]),
        dataset_name=f"emag_{variant}",
        pipelines_dir=os.environ["DLT_PIPELINES_DIR"],
    )
    stages = {}
    for stage, call in (("extract", lambda: pipeline.extract([account_source("fbe"), account_source("main")])),
                        ("normalize", pipeline.normalize), ("load", pipeline.load)):  # fmt: skip
        began = time.perf_counter()
        call()
        stages[stage] = round(time.perf_counter() - began, 3)
    with pipeline.sql_client() as sql:
        rows = {t: sql.execute_sql(f"SELECT count(*) FROM {t}")[0][0] for t in ("fbe_offers", "main_offers")}
    print(json.dumps({"dlt": dlt.__version__, "variant": variant, "rows": rows, "stages": stages,
                      "in_process_seconds": round(time.perf_counter() - started, 3)}))  # fmt: skip


if __name__ == "__main__":
    main()
