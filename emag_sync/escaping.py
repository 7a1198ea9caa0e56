"""External text (eMAG, the database, operators) made literal for markdown: the Prefect artifacts."""

from __future__ import annotations

import re
from urllib.parse import quote

# Every ASCII punctuation character. CommonMark (and GFM, which the Prefect UI renders, raw HTML included)
# reads a backslash-escaped punctuation character as that character: never emphasis, code, a link, a
# table pipe, an entity or an HTML tag.
_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")
# What a link destination may hold as it is; everything else (spaces, parentheses, angle brackets,
# quotes) is percent-encoded so the URL cannot end the link early or carry markup.
_URL_SAFE = ":/?#[]@!$&'*+,;=%~"


def markdown_text(value: object) -> str:
    """``value`` as literal markdown text on one line (a table cell or a sentence): nothing in it is
    markup, and a line break cannot start a new block."""
    return _PUNCTUATION.sub(r"\\\1", " ".join(str(value).splitlines()))


_ESCAPED = re.compile(r"\\([!-/:-@\[-`{-~])")


def markdown_plain(text: str) -> str:
    """The text ``markdown_text`` made literal, as it was (on one line): for reading back what a table
    artifact shows."""
    return _ESCAPED.sub(r"\1", text)


def markdown_url(url: str) -> str:
    """``url`` fit to be a markdown link destination: it stays one URL, whatever it holds."""
    return quote(url, safe=_URL_SAFE)


def markdown_link(text: object, url: str) -> str:
    """A markdown link whose text is literal and whose destination stays one URL."""
    return f"[{markdown_text(text)}]({markdown_url(url)})"
