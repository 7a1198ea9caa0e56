"""Secrets out of every URL the project prints: the userinfo's password and secret-looking query values."""

from __future__ import annotations

from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from sqlalchemy.engine import URL, make_url

REDACTED = "***"
# Query parameters that carry a secret (psycopg takes ?password=..., webhooks often ?token=...).
_SECRET_KEYS = ("password", "passwd", "pwd", "pass", "secret", "token", "key", "auth", "signature", "sig")


def _is_secret(name: str) -> bool:
    lowered = name.lower()
    return any(part in lowered for part in _SECRET_KEYS)


def redact_url(url: str | URL) -> str:
    """The URL as it may be shown: passwords and secret query values replaced by ***, wherever they sit."""
    if isinstance(url, URL):
        base = url.set(query={}).render_as_string(hide_password=True)
        pairs = [
            f"{name}={REDACTED if _is_secret(name) else item}"
            for name, value in url.query.items()
            for item in ((value,) if isinstance(value, str) else value)
        ]
        return base + ("?" + "&".join(pairs) if pairs else "")
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED  # not a URL we can take apart: show nothing of it
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{REDACTED}@{host}" if ":" in userinfo else f"{user}@{host}"
    query = urlencode(
        [
            (name, REDACTED if _is_secret(name) else value)
            for name, value in parse_qsl(parts.query, keep_blank_values=True)
        ],
        safe="/:@*",
        quote_via=quote,
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_database_url(url: str) -> str:
    """A database URL as text, redacted (an unparsable one shows nothing)."""
    try:
        return redact_url(make_url(url))
    except Exception:
        return REDACTED


def redact_target_url(url: str) -> str:
    """A notification target (a webhook) as it may be shown: stricter than ``redact_url``, as webhooks
    carry their token anywhere: user info, every query value and the fragment go, and the path after its
    first segment (Slack, Teams and Discord put the token in the path)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return REDACTED
    netloc = ("***@" if parts.username or parts.password else "") + (parts.hostname or "")
    if port:
        netloc += f":{port}"
    segments = [s for s in parts.path.split("/") if s]
    path = f"/{segments[0]}/{REDACTED}" if len(segments) > 1 else parts.path
    query = "&".join(f"{key.partition('=')[0]}={REDACTED}" for key in parts.query.split("&") if key)
    return urlunsplit((parts.scheme, netloc, path, query, ""))
