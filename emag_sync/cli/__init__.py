"""The ``emag-sync`` command line: the one part of emag_sync that may import flows/ and tasks/."""

from emag_sync.cli.main import app

__all__ = ["app"]
