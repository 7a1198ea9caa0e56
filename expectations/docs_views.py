"""Data Docs views that compile each page template once per process.

GX builds a jinja Environment per view, three views per Data Docs build (suites, validations, index) and a
build per checkpoint, and a new Environment compiles every template it meets again: at 2,550 records that
was a fifth of a checkpoint's time. These views share one in-memory bytecode cache, keyed by template name
and source checksum, so a changed template is compiled afresh. The templates, their autoescaping and what
they render are GX's own.

GX imports this module itself (the site's view settings, see checkpoint.py); our own modules never do.
"""

from __future__ import annotations

import threading
from typing import Any

from great_expectations.render.view.view import DefaultJinjaIndexPageView, DefaultJinjaPageView
from jinja2 import BytecodeCache
from jinja2.bccache import Bucket


class _ProcessBytecodeCache(BytecodeCache):
    """Compiled templates in memory for the life of the process (a handful, tens of kB)."""

    def __init__(self) -> None:
        self._compiled: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def load_bytecode(self, bucket: Bucket) -> None:
        with self._lock:
            compiled = self._compiled.get(bucket.key)
        if compiled is not None:
            bucket.bytecode_from_string(compiled)

    def dump_bytecode(self, bucket: Bucket) -> None:
        compiled = bucket.bytecode_to_string()
        with self._lock:
            self._compiled[bucket.key] = compiled


TEMPLATES = _ProcessBytecodeCache()


class CachedJinjaPageView(DefaultJinjaPageView):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.env.bytecode_cache = TEMPLATES


class CachedJinjaIndexPageView(DefaultJinjaIndexPageView):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.env.bytecode_cache = TEMPLATES
