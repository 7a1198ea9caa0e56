"""The sandbox's FastAPI app: eMAG's /api-3 endpoints (also per platform, /emag-bg/api-3) plus /_sandbox
control endpoints for tests."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from emag_sandbox.hostile import render
from emag_sandbox.state import (
    RATE_LIMIT_MESSAGE,
    Faults,
    Gate,
    RequestRefused,
    SandboxState,
    UnknownAccountError,
)
from emag_sync.platforms import PLATFORMS

API_PREFIX = "/api-3"
CONTROL_PREFIX = "/_sandbox"
READ_ACTIONS = {("product_offer", "read"), ("product_offer", "count")}
SAVE_ACTIONS = {("offer", "save"), ("product_offer", "save")}


def envelope(
    results: Any = None, *, messages: list[str] | None = None, is_error: bool = False
) -> dict[str, Any]:
    """eMAG's response shape."""
    return {"isError": is_error, "messages": messages or [], "results": [] if results is None else results}


def _credentials(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        username, sep, password = (
            base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
        )
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (username, password) if sep else None


def _payload(raw: bytes) -> tuple[object, str | None]:
    """The request's data: ``{"data": ...}`` unwrapped, bare JSON as is; an error text for bad JSON."""
    if not raw.strip():
        return {}, None
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None, "The request body is not valid JSON"
    if isinstance(body, dict) and "data" in body:
        return body["data"], None
    return body, None


def _page_of(resource: str, action: str, data: object) -> int | None:
    """The catalogue page a read asked for; None for anything else, reads of one product included."""
    if (resource, action) != ("product_offer", "read"):
        return None
    if isinstance(data, dict) and any(
        data.get(key) is not None for key in ("id", "part_number", "part_number_key")
    ):
        return None
    page = data.get("currentPage", 1) if isinstance(data, dict) else 1
    try:
        return int(page)
    except (TypeError, ValueError):
        return None


def _rate_headers(gate: Gate) -> dict[str, str]:
    if gate.limit is None:
        return {}
    return {
        "X-RateLimit-Limit-3second": str(gate.limit),
        "X-RateLimit-Remaining-3second": str(gate.remaining or 0),
    }


def _server_error(status: int) -> Response:
    # gateways in front of eMAG answer HTML, not the JSON envelope
    title = f"{status} {HTTPStatus(status).phrase}"
    body = f"<html><head><title>{title}</title></head><body><center><h1>{title}</h1></center></body></html>"
    return HTMLResponse(body, status_code=status)


async def _control_body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw) if raw.strip() else {}
    except ValueError:
        raise HTTPException(422, "the body is not valid JSON") from None


def _account_param(state: SandboxState, value: str) -> str:
    try:
        return state.account_named(value.lower())
    except UnknownAccountError as exc:
        raise HTTPException(404, str(exc)) from None


def _wrong_credentials() -> JSONResponse:
    return JSONResponse(
        envelope(messages=["Invalid username or password"], is_error=True),
        status_code=401,
        headers={"WWW-Authenticate": 'Basic realm="eMAG Marketplace API"'},
    )


def create_app(state: SandboxState) -> FastAPI:
    """The app serving ``state`` (also at ``app.state.sandbox``)."""
    app = FastAPI(title="eMAG Marketplace API sandbox", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.sandbox = state

    async def api_call(platform: str | None, resource: str, action: str, request: Request) -> Response:
        arrived = time.monotonic()  # the rate limit counts arrivals, not when the loop got round to them
        data, body_error = _payload(await request.body())
        page = _page_of(resource, action, data)
        credentials = _credentials(request)
        account = state.authenticate(*credentials, platform=platform) if credentials else None
        if account is None:
            state.log(None, resource, action, page, 401)
            return _wrong_credentials()
        response = await _answer(state, account, resource, action, data, body_error, arrived)
        state.log(account, resource, action, page, response.status_code)
        return response

    @app.post(API_PREFIX + "/{resource}/{action}")
    async def api(resource: str, action: str, request: Request) -> Response:
        """Any account, by its credentials."""
        return await api_call(None, resource, action, request)

    @app.post("/{platform}" + API_PREFIX + "/{resource}/{action}")
    async def platform_api(platform: str, resource: str, action: str, request: Request) -> Response:
        """One platform's host: another platform's credentials are wrong credentials here, as on eMAG."""
        if platform not in PLATFORMS:
            return JSONResponse(
                envelope(
                    messages=[f"Unknown platform {platform!r}; this sandbox serves {', '.join(PLATFORMS)}"],
                    is_error=True,
                ),
                status_code=404,
            )
        return await api_call(platform, resource, action, request)

    @app.get(CONTROL_PREFIX + "/faults")
    def get_faults() -> dict[str, Any]:
        return {str(account): faults.to_json() for account, faults in state.faults.items()}

    @app.post(CONTROL_PREFIX + "/faults/{account}")
    async def set_faults(account: str, request: Request) -> dict[str, Any]:
        which = _account_param(state, account)
        body = await _control_body(request)
        try:
            faults = Faults.from_json(body if isinstance(body, dict) else {"?": body})
        except (TypeError, ValueError) as exc:
            raise HTTPException(422, str(exc)) from None
        return state.set_faults(which, faults).to_json()

    @app.get(CONTROL_PREFIX + "/requests")
    def requests_log(account: str | None = None) -> list[dict[str, Any]]:
        wanted = None if account is None else _account_param(state, account)
        return [r.to_json() for r in list(state.request_log) if wanted is None or r.account == wanted]

    @app.get(CONTROL_PREFIX + "/saves")
    def saves() -> list[dict[str, Any]]:
        return [s.to_json() for s in list(state.saves)]

    @app.post(CONTROL_PREFIX + "/reset")
    def reset() -> dict[str, bool]:
        state.reset()
        return {"reset": True}

    @app.post(CONTROL_PREFIX + "/records/{account}/{change}")
    async def change_records(account: str, change: str, request: Request) -> dict[str, list[int]]:
        which = _account_param(state, account)
        body = await _control_body(request)
        try:
            n = int(body.get("n", 0))
            if change == "remove":
                return {"removed": state.remove_records(which, n, ids=[int(i) for i in body.get("ids", [])])}
            if change == "reprice":
                return {"repriced": state.reprice_records(which, n)}
            if change == "add":
                return {"added": state.add_records(which, n)}
            if change == "restore":
                return {"restored": state.restore_records(which, [int(i) for i in body.get("ids", [])])}
        except (TypeError, ValueError, AttributeError) as exc:
            raise HTTPException(422, str(exc)) from None
        raise HTTPException(404, f"unknown change {change!r}; use remove, reprice, add or restore")

    return app


async def _answer(
    state: SandboxState,
    account: str,
    resource: str,
    action: str,
    data: object,
    body_error: str | None,
    arrived: float,
) -> Response:
    """Everything after authentication: rate limit and faults first, then the eMAG call itself."""
    gate = state.gate(account, now=arrived)
    headers = _rate_headers(gate)
    if gate.status_code == 429:
        # eMAG's gateway answers 429 without the envelope
        return JSONResponse({"message": RATE_LIMIT_MESSAGE}, status_code=429, headers=headers)
    if gate.latency_seconds > 0:
        await asyncio.sleep(gate.latency_seconds)
    if gate.status_code is not None:
        return _server_error(gate.status_code)
    key = (resource, action)
    if key not in READ_ACTIONS | SAVE_ACTIONS:
        return JSONResponse(
            envelope(messages=[f"Unknown resource or action: {resource}/{action}"], is_error=True),
            status_code=404,
            headers=headers,
        )
    try:
        if body_error is not None:
            raise RequestRefused([body_error])
        # off the event loop: a filtered scan of a large catalogue must not stall other requests
        if action == "read":
            results: Any = await run_in_threadpool(state.read, account, data)
        elif action == "count":
            results = await run_in_threadpool(state.count, account, data)
        else:
            await run_in_threadpool(state.save, account, resource, action, data)
            results = []
            delay = state.faults[account].save_answer_delay_seconds
            if delay > 0:  # applied, answered late: a writer killed meanwhile never learns it
                await asyncio.sleep(delay)
    except RequestRefused as refused:
        return JSONResponse(envelope(messages=refused.messages, is_error=True), headers=headers)
    # rendered here, not by JSONResponse: hostile records hold what its json.dumps cannot write
    return Response(render(envelope(results)), media_type="application/json", headers=headers)
